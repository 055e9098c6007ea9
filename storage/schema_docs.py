"""The README's schema tables, rendered from the table registry.

``python -m storage.schema_docs`` rewrites the block between the two marker comments in
README.md; ``--check`` only says whether it is up to date (exit 1 when not).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from storage.registry import TABLES, TableSpec

README = Path(__file__).resolve().parents[1] / "README.md"
COMMAND = "python -m storage.schema_docs"
BEGIN = f"<!-- schema tables: generated from storage/registry.py by {COMMAND} -->"
END = "<!-- end of schema tables -->"
WIDTH = 100  # the README's line width (tables excepted)


def type_text(data_type: pa.DataType, *, sized: bool = False) -> str:
    """An Arrow type as the README writes it (``list<string>``, ``float32``, ``[dim]``).

    ``sized`` writes a fixed-size list's real size instead of ``dim`` (for a file's schema).
    """
    if pa.types.is_fixed_size_list(data_type):
        size = data_type.list_size if sized else "dim"
        return f"fixed_size_list<{type_text(data_type.value_type)}>[{size}]"
    if pa.types.is_list(data_type):
        return f"list<{type_text(data_type.value_type)}>"
    if pa.types.is_floating(data_type):  # Arrow says "float" and "double"
        return f"float{data_type.bit_width}"
    if pa.types.is_struct(data_type):
        fields = ", ".join(f"{f.name}: {type_text(f.type)}" for f in data_type)
        return f"struct{{{fields}}}"
    return str(data_type)


def table_markdown(spec: TableSpec) -> str:
    """One table's heading line and its ``column | type | meaning`` table."""
    schema = spec.schema(1) if spec.needs_dim else spec.schema()  # dim is shown as [dim]
    also = ", ".join(f"`{s}`" for s in spec.also_written_by)
    stage = f"stage `{spec.stage}`" + (f" (also {also})" if also else "")
    where = f"`{spec.file_name}` (sharded)" if spec.sharded else f"`{spec.file_name}`"
    heading = f"**`{spec.name}`**: {where}, {stage}. {spec.description}"
    lines = [
        textwrap.fill(heading, WIDTH, break_on_hyphens=False, break_long_words=False),
        "",
        "| column | type | meaning |",
        "| --- | --- | --- |",
    ]
    for column in schema:
        nullable = ", nullable" if column.nullable else ""
        meaning = spec.columns[column.name]
        lines.append(f"| {column.name} | {type_text(column.type)}{nullable} | {meaning} |")
    return "\n".join(lines)


def tables_markdown(specs: Iterable[TableSpec] = TABLES.values()) -> str:
    """Every table's section, in registry order, between the markers."""
    body = "\n\n".join(table_markdown(spec) for spec in specs)
    return f"{BEGIN}\n\n{body}\n\n{END}"


def with_tables(text: str, block: str) -> str:
    """``text`` (the README) with its marked block replaced by ``block``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README lacks the marker lines {BEGIN!r} ... {END!r}; add them once")
    return text[:start] + block + text[end + len(END) :]


def described_columns(spec: TableSpec, schema: pa.Schema | None, width: int) -> list[str]:
    """Text lines for a terminal: the table's description, then ``column type  meaning`` each."""
    lines = textwrap.wrap(spec.description, width, break_on_hyphens=False)
    # the file's own columns and types (an older file may differ from the registry)
    if schema is None:
        labels = [(column, column) for column in spec.columns]
    else:
        labels = [(f.name, f"{f.name} {type_text(f.type, sized=True)}") for f in schema]
    pad = min(max((len(label) for _, label in labels), default=0), width // 3) + 2
    for column, label in labels:
        meaning = spec.columns.get(column, "(not in the registry)")
        wrapped = textwrap.wrap(meaning, max(width - pad, 20), break_on_hyphens=False)
        if len(label) + 2 > pad:  # a long type: its meaning starts on the next line
            lines.append(label)
            label = ""
        lines.append(f"{label:<{pad}}{wrapped[0]}")
        lines += [" " * pad + rest for rest in wrapped[1:]]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with ``--check`` compare) the README's schema tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=README, help="default: the project's")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is stale")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    updated = with_tables(text, tables_markdown())
    if args.check:
        stale = updated != text
        print(f"{args.readme}: schema tables {'out of date; run ' + COMMAND if stale else 'ok'}")
        return int(stale)
    if updated != text:
        args.readme.write_text(updated, encoding="utf-8")
    print(f"{args.readme}: schema tables {'rewritten' if updated != text else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
