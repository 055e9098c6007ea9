"""Names are data: one escaping helper per output kind, used wherever a name is shown.

Class names, file names and paths come from other people's datasets and may hold markup, table
syntax, ANSI escape sequences or bidirectional overrides. Every writer passes them through the
helper of its output kind, so they show as the text they are:

- ``markdown``: a table cell or inline text in Markdown (report.md, Prefect artifacts: the
  Prefect UI renders markdown artifacts, and the V1 UI every text cell of a table artifact, as
  Markdown with raw HTML and autolinks);
- ``code_span``: a path or URL a user copies, shown verbatim in Markdown (not in a table);
- ``html``: text or an attribute value in HTML;
- ``terminal``: a line printed to a terminal (``overlap inspect``, the CLI's messages);
- ``mathtext``: a matplotlib title, label or tick (``$`` would start math mode).

All of them first render invisible and control characters visibly (``visible``).
"""

from __future__ import annotations

import html as _html
import re
import unicodedata

# Invisible characters that change how text around them shows: controls (NUL, ESC, CR, ...),
# format characters (bidirectional overrides, zero-width joiners), line and paragraph separators.
_HIDDEN_CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}
# Characters with a meaning in Markdown (inline or in a table); the backslash escapes itself.
# Brackets make a link or image only as "[text](url)", or after a line-starting "[label]: url"
# definition: a "]" before "(" or ":" and a leading "[" (text may start a line) are escaped,
# others stay plain (a column header cosine[demo] reads as written).
_MARKDOWN_SPECIAL = set("\\|`*_#~")
_MARKDOWN_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
# What starts a GitHub-flavoured autolink ("http://", "www.", an e-mail's "@"): the character at
# the marked index is escaped, so a name that holds a URL stays text (Prefect's UI autolinks).
_AUTOLINK = re.compile(r"(?i)[a-z](:)//|\bwww(\.)|[\w.+-](@)[\w-]")


def _visible_char(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    if unicodedata.category(char) not in _HIDDEN_CATEGORIES:
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object) -> str:
    """``text`` with every control, format and separator character written as an escape."""
    return "".join(_visible_char(c) for c in str(text))


def terminal(text: object) -> str:
    """Safe to print to a terminal: no ANSI sequence, carriage return or NUL reaches it raw."""
    return visible(text)


def markdown(text: object) -> str:
    """Shows as ``text`` inside a Markdown table cell or paragraph, never as markup."""
    shown = visible(text)
    autolink = {m.start(g) for m in _AUTOLINK.finditer(shown) for g in (1, 2, 3) if m.group(g)}
    out = []
    for i, char in enumerate(shown):
        if i in autolink:
            out.append("\\" + char)
        elif char in _MARKDOWN_ENTITIES:
            out.append(_MARKDOWN_ENTITIES[char])
        elif (char == "]" and shown[i + 1 : i + 2] in ("(", ":")) or (char == "[" and i == 0):
            out.append("\\" + char)
        elif char == "_" and _intraword(shown, i):
            out.append(char)  # CommonMark: "_" between letters or digits never makes emphasis
        elif char in _MARKDOWN_SPECIAL:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def code_span(text: object) -> str:
    """A Markdown code span showing ``text`` as is (a path a user copies): its fence is one
    backtick longer than the longest run of backticks inside."""
    shown = visible(text)
    runs = [len(run) for run in re.findall("`+", shown)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if shown.startswith("`") or shown.endswith("`") else ""
    return f"{fence}{pad}{shown}{pad}{fence}"


def _intraword(text: str, i: int) -> bool:
    """True when ``text[i]`` sits between two letters or digits (as in ``maple_tree``)."""
    return 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()


def html(text: object) -> str:
    """Shows as ``text`` in HTML content or a quoted attribute value."""
    return _html.escape(visible(text), quote=True)


def mathtext(text: object, *, lines: bool = False, limit: int | None = None) -> str:
    """Shows as ``text`` in a matplotlib title, label or tick label (no math mode).

    ``lines`` keeps newlines as line breaks (a title made of lines); ``limit`` shortens to that
    many characters with an ellipsis (a very long class name would stretch a figure without end).
    """
    if lines:
        return "\n".join(mathtext(line, limit=limit) for line in str(text).split("\n"))
    shown = visible(text)
    if limit is not None and len(shown) > limit:
        shown = shown[: limit - 1] + "\u2026"
    # matplotlib counts ``$`` minus ``\$``: an even, non-zero rest starts math mode; otherwise it
    # shows the text as is, with ``\$`` as ``$``. So escaping every ``$`` is enough.
    return shown.replace("$", r"\$")
