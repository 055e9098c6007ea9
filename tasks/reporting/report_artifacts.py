"""Prefect artifacts of a run: summary, overlap and confusion tables, link to the report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

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
    lists recursively, text visible."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, float):
        return float(f"{value:.4g}")  # 0.4878048780487805 reads as 0.4878 in the UI's table
    if isinstance(value, list | tuple | np.ndarray):
        return [plain(v) for v in value]
    if isinstance(value, str):  # a class name: no control character reaches the UI raw
        return escape.visible(value)
    return value


def table_rows(table: pa.Table, columns: list[str], limit: int = TABLE_ROWS) -> list[dict]:
    """Rows of some columns as plain dicts (what table artifacts accept)."""
    present = [c for c in columns if c in table.column_names]
    rows = table.select(present).slice(0, limit).to_pylist()
    return [{k: plain(v) for k, v in row.items()} for row in rows]


def report_link(location: Location, name: str) -> str:
    """A URL to a report file: file:// for local folders, the fsspec URL otherwise."""
    if location.is_local:
        return Path(location.file(name)).resolve().as_uri()
    return location.child(name).url


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
        REPORT_KEY: create_link_artifact(
            report_url,
            link_text="report.html",
            key=REPORT_KEY,
            description="self-contained HTML report with every figure",
        ),
    }


def publish_explorer_link(url: str) -> Any:
    """A link artifact to explorer.html (inside a flow or task run); its id."""
    return create_link_artifact(
        url,
        link_text="explorer.html",
        key=EXPLORER_KEY,
        description="interactive page: heatmaps, UMAPs and pair tables linked to their images",
    )
