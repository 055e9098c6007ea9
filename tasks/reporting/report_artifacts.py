"""Prefect artifacts of a run: summary, overlap and confusion tables, link to the report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from storage import escape
from storage.fs import Location
from tasks.reporting.report_data import flagged_pairs
from tasks.reporting.report_sections import OVERLAP_COLUMNS, PAIR_COLUMNS

# Stable keys: a deployment's artifact history shows how the results move from run to run.
SUMMARY_KEY = "class-overlap-summary"
OVERLAP_KEY = "overlap-pairs"
CONFUSION_KEY = "confusion-pairs"
REPORT_KEY = "overlap-report"
EXPLORER_KEY = "overlap-explorer"
TABLE_ROWS = 200


def plain(value: Any) -> Any:
    """A JSON-safe Python value: numpy scalars to int/float (4 significant digits), NaN to None,
    lists recursively, text escaped for Markdown.

    Prefect's V1 UI renders every text cell of a table artifact as Markdown (raw HTML, links and
    autolinks included), its V2 UI shows cells as plain text: escaped, a name shows as the text it
    is in both, with backslashes or entities visible in V2 for the few names holding markup."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, float):
        return float(f"{value:.4g}")  # 0.4878048780487805 reads as 0.4878 in the UI's table
    if isinstance(value, list | tuple | np.ndarray):
        return [plain(v) for v in value]
    if isinstance(value, str):  # a class name: no markup or control character reaches the UI
        return escape.markdown(value)
    return value


def table_rows(table: pa.Table, columns: list[str], limit: int = TABLE_ROWS) -> list[dict]:
    """Rows of some columns as plain dicts (what table artifacts accept)."""
    present = [c for c in columns if c in table.column_names]
    rows = table.select(present).slice(0, limit).to_pylist()
    return [{k: plain(v) for k, v in row.items()} for row in rows]


def report_link(location: Location, name: str) -> str:
    """Where a report file is: its absolute path for local folders, the fsspec URL otherwise."""
    if location.is_local:
        return str(Path(location.file(name)).resolve())
    return location.child(name).url


def where_markdown(what: str, where: str) -> str:
    """A markdown artifact's text naming a file by its full path or URL, as copyable text.

    Not a link: a browser refuses file:// links from a http:// page, and s3:// or gs:// URLs
    open in no browser; a https:// URL shows as a link as well."""
    text = f"**{what}**: {escape.code_span(where)}"
    if where.startswith(("https://", "http://")):
        text += f"\n\n[Open]({where.replace(')', '%29').replace(' ', '%20')})"
    elif not urlsplit(where).scheme or len(urlsplit(where).scheme) == 1:  # a local path
        text += "\n\nOpen it in a browser on this machine (copy the path into the address bar)."
    return text


def publish_artifacts(
    summary: str, overlap_pairs: pa.Table, confusion_pairs: pa.Table, report_url: str
) -> dict[str, Any]:
    """Create the four artifacts (inside a flow or task run); return their ids by key."""
    return {
        SUMMARY_KEY: create_markdown_artifact(
            summary, key=SUMMARY_KEY, description="class-overlap run summary"
        ),
        OVERLAP_KEY: create_table_artifact(
            table_rows(overlap_pairs, [*OVERLAP_COLUMNS, "label_a", "label_b"]),
            key=OVERLAP_KEY,
            description="class pairs flagged as overlapping by centroid cosine (model-free)",
        ),
        CONFUSION_KEY: create_table_artifact(
            table_rows(flagged_pairs(confusion_pairs), [*PAIR_COLUMNS, "flagged"]),
            key=CONFUSION_KEY,
            description="directed class pairs the classifier confuses significantly",
        ),
        REPORT_KEY: create_markdown_artifact(
            where_markdown("report.html", report_url),
            key=REPORT_KEY,
            description="self-contained HTML report with every figure",
        ),
    }


def publish_explorer_link(url: str) -> Any:
    """An artifact naming explorer.html (inside a flow or task run); its id."""
    return create_markdown_artifact(
        where_markdown("explorer.html", url),
        key=EXPLORER_KEY,
        description="interactive page: heatmaps, UMAPs and pair tables linked to their images",
    )
