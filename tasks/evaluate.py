"""Evaluate the classifier on the test split: predictions, report, confusion matrix."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch
from prefect import get_run_logger, task
from torch import nn

from flows.config import RunConfig
from storage import escape
from storage.fingerprint import code_version
from storage.fs import Location
from storage.manifest import StageManifest
from storage.schemas import classifier as schemas
from storage.tables import table_name, write_parquet
from tasks import classifier
from tasks.stage import Stage

TOP_K = 5
REPORT_MD = "classification_report.md"
SUMMARY_ROWS = ("accuracy", "macro avg", "weighted avg")


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """K x K int64 matrix: rows are true labels, columns predicted labels."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return counts


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def class_scores(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix."""
    hits = np.diag(counts).astype(float)
    support = counts.sum(axis=1)
    precision = _ratio(hits, counts.sum(axis=0))
    recall = _ratio(hits, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def report_from_counts(counts: np.ndarray, class_names: Sequence[str]) -> pa.Table:
    """scikit-learn's classification_report as a table, with label and class name per row."""
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
        schema=schemas.CLASSIFICATION_REPORT,
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
    """Dense long table of all K*K cells, raw count and row-normalised rate."""
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
        schema=schemas.CONFUSION_MATRIX,
    )


def predict_proba(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Softmax probabilities, N x K float32."""
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
    """One row per test sample: true and predicted class, its probability, the top 5."""
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
        schema=schemas.PREDICTIONS,
    )


def write_evaluation(
    location: Location, y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict[str, int | None]:
    """Write classification_report (Parquet + markdown) and confusion_matrix; name -> rows."""
    counts = confusion_counts(y_true, y_pred, len(class_names))
    report = report_from_counts(counts, class_names)
    location.write_bytes(REPORT_MD, report_markdown(report).encode())
    return {
        table_name("classification_report"): write_parquet(
            location, table_name("classification_report"), report, schemas.CLASSIFICATION_REPORT
        ),
        REPORT_MD: None,
        table_name("confusion_matrix"): write_parquet(
            location,
            table_name("confusion_matrix"),
            confusion_matrix_table(counts, class_names),
            schemas.CONFUSION_MATRIX,
        ),
    }


def _inputs(
    model_manifest: StageManifest,
    embeddings: StageManifest,
    subset: StageManifest,
    config: RunConfig,
) -> dict:
    return {
        "model": model_manifest.fingerprint,
        "embeddings": embeddings.fingerprint,
        "subset": subset.fingerprint,
        "code": CODE,
    }


CODE = code_version(sys.modules[__name__], classifier, schemas)
STAGE = Stage("evaluate", _inputs)


@task(name="evaluate", cache_policy=STAGE.cache_policy, persist_result=True)
def evaluate_task(
    model_manifest: StageManifest,
    embeddings: StageManifest,
    subset: StageManifest,
    config: RunConfig,
) -> StageManifest:
    """Predict the test split; write predictions, classification report and confusion matrix."""
    net, model_config = classifier.load_model(
        model_manifest.location.read_bytes(classifier.MODEL_FILE)
    )
    class_names = list(model_config["class_names"])
    sample_ids, x_test, y_test = classifier.load_split_arrays(embeddings, subset)["test"]
    if len(y_test) == 0:
        raise ValueError("the subset has no test samples; raise --test-fraction")
    predictions = predictions_table(sample_ids, y_test, predict_proba(net, x_test), class_names)
    y_pred = predictions.column("y_pred").to_numpy()
    location = STAGE.location(
        model_manifest=model_manifest, embeddings=embeddings, subset=subset, config=config
    )
    files = {
        table_name("predictions"): write_parquet(
            location, table_name("predictions"), predictions, schemas.PREDICTIONS
        )
    }
    files |= write_evaluation(location, y_test, y_pred, class_names)
    accuracy = float((y_pred == y_test).mean())
    get_run_logger().info("evaluate: test accuracy %.4f on %d samples", accuracy, len(y_test))
    return STAGE.finish(
        location,
        files,
        params={},
        code=CODE,
        info={"class_names": class_names, "accuracy": accuracy, "test_rows": len(y_test)},
    )
