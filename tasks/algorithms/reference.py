"""A finished run's figures beside the reference result (CIFAR-100, DINO ViT-S/16), row by row.

The reference: 54 overlapping classes, MLP accuracy 0.7835 on their 5,400 test images, and the
top confusion pairs below. A run reproduces a figure when it lies within two binomial standard
errors of it (the test set has 100 images a class, so a MisRate of 0.24 has an error of 0.04).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

SEED_COLUMNS = ("MisRate", "Precision(Pred)", "Recall(True)", "F1(True)", "F1(Pred)")


@dataclass(frozen=True)
class Reference:
    """The figures a run is held against: classes, accuracy, test images, top confusion pairs."""

    classes: int
    accuracy: float
    test_images: int
    pairs: tuple[tuple[str, str, float], ...]  # (True, Pred, MisRate)


REFERENCE = Reference(
    classes=54,
    accuracy=0.7835,
    test_images=5400,
    pairs=(
        ("maple_tree", "oak_tree", 0.24),
        ("girl", "woman", 0.16),
        ("girl", "baby", 0.14),
        ("man", "woman", 0.14),
        ("mouse", "shrew", 0.14),
    ),
)


def two_standard_errors(rate: float, n: int | None) -> float | None:
    """Twice the binomial standard error of ``rate`` measured on ``n`` trials (None if unknown)."""
    if not n:
        return None
    return 2 * math.sqrt(max(rate * (1 - rate), 0.0) / n)


def _close(run: float | None, reference: float, spread: float | None) -> bool | None:
    """The run is within ``spread`` of the reference; None when either is unknown."""
    if run is None or spread is None:
        return None
    return abs(run - reference) <= spread


def summary_beside_reference(
    *,
    classes: int | None,
    accuracy: float | None,
    test_images: int | None,
    reference: Reference = REFERENCE,
) -> pa.Table:
    """Rows: classes, accuracy, test images. Columns: item, reference, run, spread, close.

    ``spread``: how far the run may differ by chance (two binomial standard errors for accuracy;
    0 for the counts); ``close``: the run is within it (null when the run lacks the figure).
    """
    spread = None if accuracy is None else two_standard_errors(accuracy, test_images)
    rows = [
        ("classes", reference.classes, classes, 0.0),
        ("accuracy", reference.accuracy, accuracy, spread),
        ("test images", reference.test_images, test_images, 0.0),
    ]
    return pa.table(
        {
            "item": [row[0] for row in rows],
            "reference": pa.array([float(row[1]) for row in rows], pa.float64()),
            "run": pa.array([None if row[2] is None else float(row[2]) for row in rows]),
            "spread": pa.array([row[3] for row in rows], pa.float64()),
            "close": pa.array([_close(row[2], row[1], row[3]) for row in rows], pa.bool_()),
        }
    )


def _class_scores(report: pa.Table | None) -> dict[str, dict[str, float]]:
    """Per-class precision, recall, f1 and support from ``classification_report``."""
    if report is None:
        return {}
    per_class = report.filter(pc.is_valid(report.column("label"))).to_pylist()
    return {row["class_name"]: row for row in per_class}


def pairs_beside_reference(
    confusion: pa.Table | None,
    report: pa.Table | None,
    flagged: Iterable[tuple[str, str]],
    reference: Reference = REFERENCE,
) -> pa.Table:
    """Rows: one per reference pair, in reference order (True -> Pred, as the seed's table).

    Columns: True, Pred; ``reference MisRate``; the seed's MisRate, Precision(Pred),
    Recall(True), F1(True), F1(Pred) from the run's ``confusion_pairs`` (MisRate 0 and scores
    from ``classification_report`` when the classifier never confused the pair; null when a class
    was not in the classifier's subset); ``spread`` and ``close`` as in the summary;
    ``overlap_flagged`` (model-free: the pair is in ``overlap_pairs``); ``confusion_flagged``.
    """
    scores = _class_scores(report)
    found = {} if confusion is None else {(r["True"], r["Pred"]): r for r in confusion.to_pylist()}
    model_free = {frozenset(pair) for pair in flagged}
    rows = []
    for true, pred, rate in reference.pairs:
        row: dict = {"True": true, "Pred": pred, "reference MisRate": rate}
        hit = found.get((true, pred))
        known = hit is not None or (true in scores and pred in scores)
        if hit is not None:
            row |= {column: hit[column] for column in SEED_COLUMNS}
        elif known:
            row |= {
                "MisRate": 0.0,
                "Precision(Pred)": scores[pred]["precision"],
                "Recall(True)": scores[true]["recall"],
                "F1(True)": scores[true]["f1"],
                "F1(Pred)": scores[pred]["f1"],
            }
        support = hit["support"] if hit is not None else scores.get(true, {}).get("support")
        spread = two_standard_errors(rate, support) if known else None
        row |= {
            "spread": spread,
            "close": _close(row.get("MisRate"), rate, spread),
            "overlap_flagged": frozenset((true, pred)) in model_free,
            "confusion_flagged": bool(hit["flagged"]) if hit is not None else False,
        }
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=PAIRS_BESIDE)


PAIRS_BESIDE = pa.schema(
    [
        pa.field("True", pa.string(), nullable=False),
        pa.field("Pred", pa.string(), nullable=False),
        pa.field("reference MisRate", pa.float64(), nullable=False),
        *(pa.field(column, pa.float64()) for column in SEED_COLUMNS),
        pa.field("spread", pa.float64()),
        pa.field("close", pa.bool_()),
        pa.field("overlap_flagged", pa.bool_(), nullable=False),
        pa.field("confusion_flagged", pa.bool_(), nullable=False),
    ]
)


def _cell(value: object) -> str:
    """One printed cell: - for missing, yes/no, counts as integers, rates to 4 decimals."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        # Counts (classes, images) as integers; rates, which never exceed 1, with four decimals.
        return f"{value:,.0f}" if value.is_integer() and abs(value) > 1 else f"{value:.4f}"
    return str(value)


def render_text(table: pa.Table) -> str:
    """A table as aligned plain text, one row a line, for a terminal."""
    rows = [table.column_names] + [[_cell(v) for v in row.values()] for row in table.to_pylist()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    # First column (names) left-aligned, figures right-aligned.
    lines = []
    for row in rows:
        cells = [cell.rjust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join([row[0].ljust(widths[0]), *cells[1:]]))
    return "\n".join(lines)


def beside_reference_text(summary: pa.Table, pairs: pa.Table) -> str:
    """Both tables, and one verdict line: how many figures are within their spread."""
    verdicts = summary.column("close").to_pylist() + pairs.column("close").to_pylist()
    known = [v for v in verdicts if v is not None]
    verdict = f"{sum(known)} of {len(verdicts)} figures within their spread of the reference"
    if len(known) < len(verdicts):
        verdict += f" ({len(verdicts) - len(known)} missing from this run)"
    return f"{render_text(summary)}\n\n{render_text(pairs)}\n\n{verdict}"
