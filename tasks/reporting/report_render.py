"""Report rendering: one list of blocks becomes both report.md and a self-contained report.html."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pyarrow as pa

from storage import escape
from storage.fs import Location
from tasks.core import progress

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

REPORT_MD, REPORT_HTML = "report.md", "report.html"

MAX_TABLE_ROWS = 60  # longer tables are cut in the report; the Parquet file has them all
PAGE_WIDTH_PX = 1150  # the page's content width (CSS max-width 1200px less padding)

CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,td:nth-child(2){text-align:left}
th:first-child,th:nth-child(2){text-align:left}
.link{background:#eef4ff;border:1px solid #9bd;padding:0.6em;font-size:1.1em}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}
.warning{background:#fdd;border:2px solid #c00;padding:0.8em;font-weight:bold}
code{background:#f4f4f4;padding:1px 4px}
.wide{overflow-x:auto;max-width:100%}.wide img{max-width:none}
"""


@dataclass(frozen=True)
class Heading:
    """A section heading."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    """A paragraph (plain text; `code` spans kept as they are in markdown)."""

    text: str
    warning: bool = False


@dataclass(frozen=True)
class Table:
    """A table with a header row."""

    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass(frozen=True)
class Figure:
    """A PNG figure: its file name next to the report and its bytes (embedded in the HTML)."""

    name: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Link:
    """A paragraph linking a file next to the report (``href``: its name, a relative URL)."""

    text: str
    href: str


Block = Heading | Text | Table | Figure | Link


def cell(value: Any) -> str:
    """A table cell as text: floats with 4 significant decimals, None as empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def arrow_table(table: pa.Table, columns: Sequence[str], limit: int = MAX_TABLE_ROWS) -> Table:
    """A report table from some columns of an Arrow table, cut at ``limit`` rows with a note."""
    # Columns empty in every row (e.g. centroid_cosine without embeddings) only add noise.
    columns = [
        c for c in columns if table.num_rows == 0 or table.column(c).null_count < table.num_rows
    ]
    shown = table.select(columns).slice(0, limit).to_pylist()
    note = ""
    if table.num_rows > limit:
        note = f"First {limit} of {table.num_rows} rows; the Parquet file has them all."
    return Table(list(columns), [[row[c] for c in columns] for row in shown], note)


def _md_text(text: str) -> str:
    """Escaped text with `code` spans kept (authors write those; names never open one)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an odd backtick: no spans, all text
        return escape.markdown(text)
    return "".join(
        f"`{escape.visible(p)}`" if i % 2 else escape.markdown(p) for i, p in enumerate(parts)
    )


def png_width(png: bytes) -> int:
    """Width in pixels of PNG bytes (from the IHDR chunk, which always comes first)."""
    return int.from_bytes(png[16:20], "big")


def _html_figure(block: Figure) -> str:
    """A figure as an inline image; one wider than the page keeps its full size in a scroll box.

    Shrunk to page width, a 100-class confusion matrix has unreadable 2-pixel labels.
    """
    data = base64.b64encode(block.png).decode("ascii")
    alt, name = escape.html(block.caption), escape.html(block.name)
    image = f'<img src="data:image/png;base64,{data}" alt="{alt}">'
    if png_width(block.png) > PAGE_WIDTH_PX:
        image = f'<div class="wide">{image}</div>'
        # Still self-contained: the file next to the report is named, not linked.
        caption = (
            f"{alt} (full size: scroll sideways; also <code>{name}</code> next to this report)"
        )
    else:
        caption = f"{alt} (<code>{name}</code>)"
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def to_markdown(title: str, blocks: Sequence[Block]) -> str:
    """The report as markdown; figures referenced by file name (they lie next to report.md)."""
    out = [f"# {escape.markdown(title)}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            out += [f"{'#' * block.level} {escape.markdown(block.text)}", ""]
        elif isinstance(block, Text):
            text = _md_text(block.text)
            out += [f"> **WARNING:** {text}" if block.warning else text, ""]
        elif isinstance(block, Table):
            out.append("| " + " | ".join(map(escape.markdown, block.columns)) + " |")
            out.append("|" + " --- |" * len(block.columns))
            out += [
                "| " + " | ".join(escape.markdown(cell(v)) for v in row) + " |"
                for row in block.rows
            ]
            out += ["", f"_{escape.markdown(block.note)}_", ""] if block.note else [""]
        elif isinstance(block, Link):
            out += [f"[{escape.markdown(block.text)}]({quote(block.href)})", ""]
        else:
            caption = escape.markdown(block.caption)
            out += [f"![{caption}]({block.name})", "", f"_{caption}_", ""]
    return "\n".join(out)


def _html_text(text: str) -> str:
    """Escaped text with `code` spans."""
    parts = escape.html(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(title: str, blocks: Sequence[Block]) -> str:
    """The report as one HTML file: inline CSS, figures as base64 data URIs, no external links."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape.html(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape.html(title)}</h1>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{escape.html(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            css = ' class="warning"' if block.warning else ""
            prefix = "WARNING: " if block.warning else ""
            out.append(f"<p{css}>{prefix}{_html_text(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{escape.html(c)}</th>" for c in block.columns)
            body = "".join(
                "<tr>" + "".join(f"<td>{escape.html(cell(v))}</td>" for v in row) + "</tr>"
                for row in block.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            if block.note:
                out.append(f"<p><em>{escape.html(block.note)}</em></p>")
        elif isinstance(block, Link):
            href = escape.html(quote(block.href))
            out.append(f'<p class="link"><a href="{href}">{escape.html(block.text)}</a></p>')
        else:
            out.append(_html_figure(block))
    out.append("</body></html>")
    return "\n".join(out)


def figure(name: str, caption: str, fig: MplFigure) -> Figure:
    """A report figure from a matplotlib figure (figures loads matplotlib: only when drawing)."""
    from tasks.reporting import figures

    block = Figure(f"figure-{name}.png", caption, figures.png_bytes(fig))
    progress.step(figure=name)  # the report stage's progress, when one is shown
    return block


def report_files(title: str, blocks: list[Block]) -> dict[str, bytes]:
    """Every figure's PNG, report.md and report.html: file name -> bytes."""
    files = {block.name: block.png for block in blocks if isinstance(block, Figure)}
    files[REPORT_MD] = to_markdown(title, blocks).encode()
    files[REPORT_HTML] = to_html(title, blocks).encode()
    return files


def write_report(location: Location, title: str, blocks: list[Block]) -> dict[str, int | None]:
    """Write every figure, report.md and report.html into ``location``; name -> None."""
    files = report_files(title, blocks)
    for name, data in files.items():
        location.write_bytes(name, data)
    return dict.fromkeys(files)
