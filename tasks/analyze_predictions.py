"""Bring your own predictions: report, confusion matrix and confusion pairs without training."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from storage.fs import Location
from storage.layout import duplicate_names
from storage.manifest import StageManifest
from tasks import evaluate
from tasks.algorithms import classification
from tasks.algorithms import confusion_pairs as confusion
from tasks.algorithms.confusion_pairs import Rule
from tasks.core.params import ConfusionParams
from tasks.core.stage import Output, Stage
from tasks.reporting import explorer, explorer_data

REQUIRED = ("y_true", "y_pred")
# Without a class list the labels 0..max are the classes; beyond this the matrix alone is GiBs.
MAX_CLASSES_WITHOUT_LIST = 10_000
# The confusion stage's defaults, so the flow and analyze-predictions agree unless told otherwise.
_DEFAULT = {
    name: ConfusionParams.model_fields[f"confusion_{name}"].default
    for name in ("k", "rule", "alpha")
}


class PredictionsError(ValueError):
    """A predictions or class-names file the analysis cannot use; the message says why."""


def _read_bytes(path: str, what: str) -> bytes:
    try:
        with fsspec.open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise PredictionsError(f"{what} file not found: {path}") from None
    if not data.strip():
        raise PredictionsError(f"{what} file {path} is empty")
    return data


def _load_npy(path: str, what: str) -> np.ndarray:
    """One array from a .npy file (no pickled objects: a file from elsewhere runs no code)."""
    try:
        return np.load(io.BytesIO(_read_bytes(path, what)), allow_pickle=False)
    except ValueError as error:
        raise PredictionsError(f"cannot read {what} file {path} as NumPy: {error}") from None


def predictions_from_numpy(predictions: np.ndarray, labels: np.ndarray, where: str) -> pa.Table:
    """y_true and y_pred from cleanlab's arrays: ``labels`` (N true labels) and ``predictions``,
    either N predicted labels or ``pred_probs`` (N x K, predicted class = the most probable).

    Returns a table of columns y_true and y_pred (int64)."""
    if predictions.ndim == 2 and np.issubdtype(predictions.dtype, np.floating):
        if np.isnan(predictions).any():
            raise PredictionsError(f"pred_probs in {where} hold NaN values")
        predictions = predictions.argmax(axis=1)
    for name, values in (("predictions", predictions), ("labels", labels)):
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise PredictionsError(
                f"{name} in {where} must be integer labels of shape (N,) (or, for predictions, "
                f"pred_probs of shape (N, K)); got {values.dtype} of shape {values.shape}"
            )
    if len(predictions) != len(labels):
        raise PredictionsError(
            f"{len(predictions)} predictions but {len(labels)} labels in {where}; "
            "they must be the same images in the same order"
        )
    return pa.table({"y_true": labels.astype(np.int64), "y_pred": predictions.astype(np.int64)})


def read_predictions(path: str | Path, labels_path: str | Path | None = None) -> pa.Table:
    """A user's predictions table from Parquet (.parquet, .pq), NumPy (.npy: predicted labels or
    pred_probs, with ``labels_path`` the true labels' .npy, as cleanlab has them) or CSV
    (anything else); columns y_true and y_pred (and any others the file has)."""
    path = str(path)
    if path.lower().endswith(".npy"):
        if labels_path is None:
            raise PredictionsError(
                f"{path} holds predictions only: pass the true labels with --labels "
                "LABELS.npy (cleanlab's labels.npy, in the same order)"
            )
        where = f"{path} and {labels_path}"
        return predictions_from_numpy(
            _load_npy(path, "predictions"), _load_npy(str(labels_path), "labels"), where
        )
    if labels_path is not None:
        raise PredictionsError(
            f"--labels goes with predictions in a .npy file; {path} holds y_true itself"
        )
    data = _read_bytes(path, "predictions")
    try:
        if path.lower().endswith((".parquet", ".pq")):
            # ParquetFile, not pq.read_table: that one scans through pyarrow.dataset, whose
            # threads can outlive an early exit ('terminate called', exit 134: apache/arrow#34314)
            return pq.ParquetFile(io.BytesIO(data)).read(use_threads=False)
        return pacsv.read_csv(io.BytesIO(data), read_options=pacsv.ReadOptions(use_threads=False))
    except pa.ArrowException as error:
        first_line = str(error).splitlines()[0]
        raise PredictionsError(f"cannot read predictions file {path}: {first_line}") from None


def read_class_names(path: str | Path) -> tuple[list[str], list[str | None] | None]:
    """Class names (index = label) and coarse names from a names-per-line file or a TSV.

    A TSV has a header with ``class_name`` and optionally ``label`` and ``coarse_name``.
    """
    with fsspec.open(str(path), "rt", encoding="utf-8") as handle:
        lines = [line.rstrip("\r\n") for line in handle if line.strip()]
    if not lines:
        raise PredictionsError(f"class-names file {path} is empty")
    header = lines[0].split("\t")
    if "class_name" not in header:
        return _unique([line.strip() for line in lines], f"class-names file {path}"), None
    rows = [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]
    if "label" in header:
        labels = sorted(_label_cell(path, header, number, row) for number, row in rows_at(rows))
        if labels != list(range(len(rows))):
            raise PredictionsError(f"labels in {path} must be 0..{len(rows) - 1}, each once")
        rows.sort(key=lambda row: int(row["label"].strip()))
    names = [row["class_name"] for row in rows]
    coarse = [row.get("coarse_name") or None for row in rows] if "coarse_name" in header else None
    return _unique(names, f"class-names file {path}"), coarse


def _unique(names: list[str], where: str) -> list[str]:
    """``names`` when no two are equal (after Unicode normalisation); else a one-line error."""
    if duplicates := duplicate_names(names):
        raise PredictionsError(
            f"{where} has duplicate class names: {', '.join(map(repr, duplicates))}; "
            "give each class its own name"
        )
    return names


def rows_at(rows: list[dict[str, str]]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a TSV body with their 1-based line numbers in the file (the header is line 1)."""
    return [(number, row) for number, row in enumerate(rows, start=2)]


def _label_cell(path: str | Path, header: list[str], line: int, row: dict[str, str]) -> int:
    """The integer in a row's label column, or a line naming file, line and column."""
    value = row.get("label", "")
    try:
        return int(value.strip())
    except ValueError:
        raise PredictionsError(
            f"{path}, line {line}, column {header.index('label') + 1} (label): {value!r} is not "
            "an integer label"
        ) from None


def _name_map(table: pa.Table) -> dict[int, str]:
    """label -> name from the optional true_name / pred_name columns; conflicts are errors."""
    mapping: dict[int, str] = {}
    for label_col, name_col in (("y_true", "true_name"), ("y_pred", "pred_name")):
        if name_col not in table.column_names:
            continue
        for label, name in zip(
            table.column(label_col).to_pylist(), table.column(name_col).to_pylist(), strict=True
        ):
            if mapping.setdefault(label, name) != name:
                raise PredictionsError(
                    f"label {label} is named both {mapping[label]!r} and {name!r}; "
                    "fix the name columns or pass a class-names file"
                )
    return mapping


def validate_predictions(
    table: pa.Table, class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(y_true, y_pred, class_names) from a predictions table; one-line errors for bad input."""
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise PredictionsError(
            f"predictions lack column(s) {', '.join(missing)}; need y_true and "
            f"y_pred (found: {', '.join(table.column_names) or 'none'})"
        )
    if table.num_rows == 0:
        raise PredictionsError("predictions table has no rows")
    for column in REQUIRED:
        if table.column(column).null_count:
            raise PredictionsError(f"{column} has {table.column(column).null_count} empty values")
    if all(pa.types.is_string(table.schema.field(c).type) for c in REQUIRED):
        # Labels given as class names: map them through the class list (sorted names if none).
        values = [table.column(c).to_pylist() for c in REQUIRED]
        seen = set(values[0]) | set(values[1])
        names = list(class_names) if class_names is not None else sorted(seen)
        _unique(names, "the predictions' class names")
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted(seen - set(index))
        if unknown:
            raise PredictionsError(f"class names not in the class list: {', '.join(unknown[:5])}")
        y_true, y_pred = (np.array([index[v] for v in vals], np.int64) for vals in values)
        return y_true, y_pred, names
    for column in REQUIRED:
        values = table.column(column)
        if pa.types.is_floating(values.type) and (nans := int(np.isnan(values.to_numpy()).sum())):
            raise PredictionsError(f"{column} has {nans} NaN value(s); every row needs a label")
    if not all(pa.types.is_integer(table.schema.field(c).type) for c in REQUIRED):
        raise PredictionsError("y_true and y_pred must both be integer labels or both class names")
    y_true, y_pred = (table.column(c).to_numpy().astype(np.int64) for c in REQUIRED)
    if class_names is None:
        mapping = _name_map(table)
        top = int(max(y_true.max(), y_pred.max()))
        if top >= MAX_CLASSES_WITHOUT_LIST:  # the confusion matrix is classes x classes
            raise PredictionsError(
                f"label {top} without a class list would mean {top + 1} classes; pass "
                "--class-names, or number the labels 0..N-1"
            )
        class_names = [mapping.get(i, str(i)) for i in range(max(top, 0) + 1)]
        _unique(class_names, "the predictions' true_name/pred_name columns")
    for column, values in (("y_true", y_true), ("y_pred", y_pred)):
        bad = np.unique(values[(values < 0) | (values >= len(class_names))])
        if bad.size:
            raise PredictionsError(
                f"{column} has labels outside the class list (0..{len(class_names) - 1}): "
                f"{', '.join(map(str, bad[:5]))}{' ...' if bad.size > 5 else ''}"
            )
    return y_true, y_pred, list(class_names)


# Writes into the folder it is given (``--out``), not under an output layout: no key, no cache.
STAGE = Stage("analyze_predictions", module=__name__)


def analysis(
    predictions_path: str | Path,
    class_names_path: str | Path | None,
    *,
    k: float,
    rule: Rule,
    alpha: float,
    labels_path: str | Path | None = None,
) -> Output:
    """Classification report, confusion matrix and confusion pairs of a predictions file
    (``labels_path``: the true labels' .npy when the predictions are a .npy)."""
    names, coarse = (None, None) if class_names_path is None else read_class_names(class_names_path)
    table = read_predictions(predictions_path, labels_path)
    y_true, y_pred, names = validate_predictions(table, names)
    if coarse is not None and len(coarse) != len(names):
        coarse = None
    tables, files = evaluate.evaluation_output(y_true, y_pred, names)
    counts = classification.confusion_counts(y_true, y_pred, len(names))
    pairs = confusion.confusion_pairs(
        counts, names, k=k, alpha=alpha, rule=rule, coarse_names=coarse
    )
    info = {
        "source": str(predictions_path),
        "labels_file": None if labels_path is None else str(labels_path),
        "class_names_file": None if class_names_path is None else str(class_names_path),
        "class_names": names,
        "rows": len(y_true),
        "accuracy": float((y_true == y_pred).mean()),
        "threshold": confusion.sigma_threshold(counts, k),
        "base_rate": confusion.base_rate(counts),
        **confusion.pair_summary(pairs),
    }
    page = explorer_data.gather_predictions(
        f"Predictions explorer: {predictions_path}", counts, names, pairs
    )
    return Output(
        tables={**tables, "confusion_pairs": pairs},
        files={**files, explorer.EXPLORER_HTML: explorer.explorer_html(page).encode()},
        info=info,
    )


def analyze_predictions(
    predictions_path: str | Path,
    class_names_path: str | Path | None,
    out: Location | str,
    *,
    k: float = _DEFAULT["k"],
    rule: Rule = _DEFAULT["rule"],
    alpha: float = _DEFAULT["alpha"],
    labels_path: str | Path | None = None,
) -> StageManifest:
    """Write classification_report (+ .md), confusion_matrix and confusion_pairs into ``out``."""
    location = out if isinstance(out, Location) else Location(str(out))
    output = analysis(
        predictions_path, class_names_path, k=k, rule=rule, alpha=alpha, labels_path=labels_path
    )
    return STAGE.save(location, output, {"k": k, "rule": rule, "alpha": alpha})
