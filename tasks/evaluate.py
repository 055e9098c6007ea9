"""Evaluate the classifier on the test split: predictions, report, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from prefect import get_run_logger

from storage import escape, registry
from storage.manifest import StageManifest
from tasks.algorithms.classification import class_scores, confusion_counts
from tasks.classifier import MODEL_FILE, load_model, load_split_arrays
from tasks.core.params import StageParams
from tasks.core.results import EvaluateInfo
from tasks.core.stage import Output, Stage

if TYPE_CHECKING:  # torch is imported where the model runs: a cached run never needs it
    from torch import nn

TOP_K = 5
REPORT_MD = "classification_report.md"
SUMMARY_ROWS = ("accuracy", "macro avg", "weighted avg")


def report_from_counts(counts: np.ndarray, class_names: Sequence[str]) -> pa.Table:
    """scikit-learn's classification_report as a table: a row per class, then accuracy, macro
    avg and weighted avg (label null); columns label, class_name, precision, recall, f1, support."""
    scores = class_scores(counts)
    support, total = scores["support"], int(counts.sum())
    accuracy = float(np.trace(counts) / total) if total else 0.0
    weights = support / total if total else np.zeros(len(support))
    # Summary rows have no label; accuracy (the micro average) fills precision, recall and f1.
    summaries = [
        (accuracy, accuracy, accuracy),
        tuple(float(scores[m].mean()) for m in ("precision", "recall", "f1")),
        tuple(float((scores[m] * weights).sum()) for m in ("precision", "recall", "f1")),
    ]
    labels = list(range(len(class_names))) + [None] * len(SUMMARY_ROWS)
    columns = {m: list(map(float, scores[m])) for m in ("precision", "recall", "f1")}
    for index, metric in enumerate(("precision", "recall", "f1")):
        columns[metric] += [row[index] for row in summaries]
    return pa.table(
        {
            "label": labels,
            "class_name": list(class_names) + list(SUMMARY_ROWS),
            **columns,
            "support": list(map(int, support)) + [total] * len(SUMMARY_ROWS),
        },
        schema=registry.table("classification_report").schema(),
    )


def classification_report_table(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> pa.Table:
    """The classification report of predicted labels against true ones."""
    return report_from_counts(confusion_counts(y_true, y_pred, len(class_names)), class_names)


def report_markdown(report: pa.Table, digits: int = 4) -> str:
    """The classification report as a markdown table (the seed's layout, with labels)."""
    lines = ["| label | class | precision | recall | f1-score | support |", "|" + " --- |" * 6]
    for row in report.to_pylist():
        label = "" if row["label"] is None else row["label"]
        metrics = " | ".join(f"{row[m]:.{digits}f}" for m in ("precision", "recall", "f1"))
        name = escape.markdown(row["class_name"])  # a name is data: never markup or a new cell
        lines.append(f"| {label} | {name} | {metrics} | {row['support']} |")
    return "\n".join(lines) + "\n"


def confusion_matrix_table(counts: np.ndarray, class_names: Sequence[str]) -> pa.Table:
    """``confusion_matrix``: a row per cell of the K x K matrix, true class major; columns
    true_label, true_name, pred_label, pred_name, count, rate (row-normalised; null: no support)."""
    k = len(class_names)
    support = counts.sum(axis=1, keepdims=True)
    rates = np.where(support > 0, counts / np.maximum(support, 1), np.nan)
    names = np.asarray(class_names, dtype=object)
    true_label, pred_label = np.repeat(np.arange(k), k), np.tile(np.arange(k), k)
    return pa.table(
        {
            "true_label": true_label.astype(np.int32),
            "true_name": names[true_label],
            "pred_label": pred_label.astype(np.int32),
            "pred_name": names[pred_label],
            "count": counts.ravel(),
            "rate": pa.array(rates.ravel(), from_pandas=True),  # NaN -> null: class not in test
        },
        schema=registry.table("confusion_matrix").schema(),
    )


def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Softmax probabilities, N x K float32."""
    import torch

    model.eval()
    with torch.inference_mode():
        parts = [
            model(torch.from_numpy(b).float()).softmax(1)
            for b in np.array_split(x, max(1, -(-len(x) // batch_size)))
        ]
    return torch.cat(parts).numpy().astype(np.float32)


def predictions_table(
    sample_ids: np.ndarray,
    y_true: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
) -> pa.Table:
    """``predictions``: a row per test sample; sample_id, y_true, y_pred, true_name, pred_name,
    probability (of y_pred), top5_labels, top5_probabilities (best first)."""
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, : min(TOP_K, len(class_names))]
    y_pred = top[:, 0]
    names = np.asarray(class_names, dtype=object)
    top_probs = np.take_along_axis(probabilities, top, axis=1)
    return pa.table(
        {
            "sample_id": np.asarray(sample_ids, np.int64),
            "y_true": np.asarray(y_true, np.int32),
            "y_pred": y_pred.astype(np.int32),
            "true_name": names[np.asarray(y_true, np.int64)],
            "pred_name": names[y_pred],
            "probability": top_probs[:, 0],
            "top5_labels": list(top.astype(np.int32)),
            "top5_probabilities": list(top_probs.astype(np.float32)),
        },
        schema=registry.table("predictions").schema(),
    )


def evaluation_output(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> tuple[dict[str, pa.Table], dict[str, bytes]]:
    """(tables, files): classification_report and confusion_matrix, and the report as markdown."""
    counts = confusion_counts(y_true, y_pred, len(class_names))
    report = report_from_counts(counts, class_names)
    tables = {
        "classification_report": report,
        "confusion_matrix": confusion_matrix_table(counts, class_names),
    }
    return tables, {REPORT_MD: report_markdown(report).encode()}


STAGE = Stage("evaluate", module=__name__, info_type=EvaluateInfo)


@STAGE.task()
def evaluate_task(
    classifier: StageManifest,
    embeddings: StageManifest,
    subset: StageManifest,
    params: StageParams,
) -> Output:
    """Predict the test split; write predictions, classification report and confusion matrix."""
    net, model_config = load_model(classifier.location.read_bytes(MODEL_FILE))
    class_names = list(model_config["class_names"])
    sample_ids, x_test, y_test = load_split_arrays(embeddings, subset, only="test")["test"]
    if len(y_test) == 0:
        raise ValueError("the subset has no test samples; raise --test-fraction")
    predictions = predictions_table(sample_ids, y_test, predict_proba(net, x_test), class_names)
    y_pred = predictions.column("y_pred").to_numpy()
    tables, files = evaluation_output(y_test, y_pred, class_names)
    accuracy = float((y_pred == y_test).mean())
    get_run_logger().info("evaluate: test accuracy %.4f on %d samples", accuracy, len(y_test))
    return Output(
        tables={"predictions": predictions, **tables},
        files=files,
        info={"accuracy": accuracy, "test_rows": len(y_test)},
    )
