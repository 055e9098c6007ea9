"""``overlap inspect OUT``: what an output root holds, and the latest run's main results."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from typing import Any, TextIO

import pyarrow as pa

from storage import catalog, registry
from storage.escape import terminal
from storage.fs import Location
from storage.layout import OutputLayout
from storage.registry import TABLES
from storage.runs import RunRecord, read_latest
from storage.schema_docs import described_columns

WIDTH = 100
SCIENTIFIC_COLUMNS = {"p_value", "q_value"}  # tiny and spanning many decades: 0.0000 hides them


def top_count(text: str) -> int | None:
    """``--top``: a positive count, or ``all`` (None); 0 and negatives are refused."""
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: pass a count of 1 or more, or 'all'")
    return value


def add_inspect_parser(commands: argparse._SubParsersAction) -> None:
    """The ``inspect`` subcommand and its flags."""
    parser = commands.add_parser(
        "inspect",
        help="list the tables under an output root and the latest run's results",
        description="List every table under an output root (rows, size, schema), then the latest "
        "run's parameters, top overlap pairs, top confusion pairs and report paths.",
    )
    parser.add_argument("out", help="output root: a folder or an fsspec URL (e.g. s3://b/p)")
    parser.add_argument(
        "--top", type=top_count, default=10, help="pairs shown per table, or 'all' (default: 10)"
    )
    parser.add_argument(
        "--no-schema", dest="schema", action="store_false", help="leave out the column lists"
    )


def human_size(n: int) -> str:
    """Bytes as a short human-readable size."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def schema_lines(schema: pa.Schema | None, width: int) -> list[str]:
    """Columns as ``name type, ...``, wrapped between columns, never inside one."""
    if schema is None:
        return ["?"]
    lines = [""]
    for column in (f"{f.name} {f.type}" for f in schema):
        if lines[-1] and len(lines[-1]) + len(column) + 2 > width:
            lines.append("")
        lines[-1] += f"{', ' if lines[-1] else ''}{column}"
    return [line + "," for line in lines[:-1]] + lines[-1:]


def print_tables(tables: list[catalog.TableInfo], show_schema: bool, out: TextIO) -> None:
    """One line per table (``*`` marks the latest run's), optionally its columns below."""
    print("Tables  (* = used by the latest run)", file=out)
    described: set[str] = set()
    for t in tables:
        shards = f" ({len(t.files)} shards)" if len(t.files) > 1 else ""
        mark = "*" if t.latest else " "
        size = human_size(t.bytes)
        print(f"{mark} {t.folder:<42} {t.name + shards:<28} {t.rows:>12,} rows {size:>9}", file=out)
        if t.damaged:
            print(terminal(f"  DAMAGED {t.folder}/{t.damaged}; see `overlap verify`"), file=out)
        if show_schema:
            # a table's meaning and columns once; later folders of the same table list the types
            spec = TABLES.get(t.name) if t.name not in described else None
            described.add(t.name)
            if spec is not None:
                lines = described_columns(spec, t.schema, WIDTH - 6)
            else:
                lines = schema_lines(t.schema, WIDTH - 6)
            for line in lines:
                print(" " * 6 + line, file=out)


def print_params(record: RunRecord, out: TextIO) -> None:
    """The latest run's name and parameters, ``key=value`` wrapped."""
    print(f"\nLatest run: {record.name}  (finished {record.finished})", file=out)
    items = [f"{k}={json.dumps(v)}" for k, v in sorted(record.params.items())]
    print(textwrap.indent("\n".join(textwrap.wrap("  ".join(items), WIDTH - 2)), "  "), file=out)


def format_value(column: str, value: Any) -> str:
    """One cell: floats to 4 decimals (p- and q-values in scientific notation), nulls as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2e}" if column in SCIENTIFIC_COLUMNS else f"{value:.4f}"
    return terminal(str(value))  # class names are data: no control character reaches the terminal


def format_table(table: pa.Table) -> str:
    """A small Arrow table as aligned text (see ``format_value``)."""
    rows = [table.column_names]
    for row in table.to_pylist():
        rows.append([format_value(c, v) for c, v in row.items()])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join("  " + line.rstrip() for line in lines)


def print_pairs(title: str, table: pa.Table | None, out: TextIO) -> None:
    """A titled pair table, or a note that the run has none."""
    print(f"\n{title}", file=out)
    if table is None:
        print("  (not written by this run)", file=out)
    elif table.num_rows == 0:
        print("  (none flagged)", file=out)
    else:
        print(format_table(table), file=out)


def enclosing_root(url: str) -> str | None:
    """The output root above ``url`` (a dataset, stage or stage-key folder in it), or None."""
    parts = url.rstrip("/").split("/")
    for up in range(1, 4):  # OUT/<dataset>/<stage>/<key>
        if len(parts) <= up or not parts[-up - 1]:
            return None
        parent = "/".join(parts[:-up])
        layout = OutputLayout(Location(parent))
        if layout.root.exists(layout.latest_name) or layout.runs.exists():
            return parent
    return None


def print_top_confusion_pairs(folder: Location, n: int = 10, out: TextIO | None = None) -> None:
    """The top pairs of ``folder``'s confusion_pairs table, as ``overlap inspect`` shows them."""
    pairs = catalog.top_confusion(registry.table("confusion_pairs").read(folder), n)
    print_pairs(f"Top confusion pairs (MisRate, at most {n})", pairs, out or sys.stdout)


def inspect_root(
    url: str, *, top: int | None = 10, show_schema: bool = True, out: TextIO | None = None
) -> int:
    """Print everything ``overlap inspect`` shows; return the exit code."""
    out = out or sys.stdout  # looked up at call time, so redirections of stdout apply
    root = Location(url)
    if not root.exists():
        raise FileNotFoundError(f"no output root at {url!r}; pass the --out of a run")
    tables = catalog.list_tables(url)
    record = read_latest(OutputLayout(root))
    if not tables and record is None:
        parent = enclosing_root(url)
        if parent is not None:
            raise FileNotFoundError(
                f"{url!r} is a folder inside the output root {parent!r}; "
                f"pass the root: overlap inspect {parent}"
            )
        raise FileNotFoundError(
            f"{url!r} holds no tables and no latest.json; is it an output root?"
        )
    print(terminal(f"Output root: {root.url}"), file=out)
    print_tables(tables, show_schema, out)
    if record is None:
        print("\nNo latest.json: no run has finished under this root.", file=out)
        return 0
    print_params(record, out)
    print_pairs(
        "Top overlap pairs (centroid cosine)", catalog.top_overlap_pairs(root, record, top), out
    )
    print_pairs(
        "Top confusion pairs (MisRate)", catalog.top_confusion_pairs(root, record, top), out
    )
    reports = catalog.report_paths(root, record)
    print("\nReports", file=out)
    print("\n".join(f"  {terminal(p)}" for p in reports) if reports else "  (none)", file=out)
    explorer = [p for p in reports if p.endswith("/explorer.html")]
    shown = terminal(explorer[0]) if explorer else "(none)"
    print(f"\nExplorer (open in a browser): {shown}", file=out)
    print(f"\nRun records: {OutputLayout(root).runs.url}/  (latest.json = the newest)", file=out)
    return 0


def inspect_command(args: argparse.Namespace) -> int:
    """Entry of ``overlap inspect``."""
    try:
        return inspect_root(args.out, top=args.top, show_schema=args.schema)
    except BrokenPipeError:  # `overlap inspect OUT | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
