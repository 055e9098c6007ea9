"""Evaluation: report numbers equal scikit-learn's, the confusion matrix table, predictions."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import numpy as np
import pytest
from prefect.logging import disable_run_logger
from sklearn.metrics import classification_report, confusion_matrix

from storage.fs import Location
from tasks import classifier, evaluate
from tasks.algorithms.classification import confusion_counts
from tasks.evaluate import (
    classification_report_table,
    confusion_matrix_table,
    predictions_table,
    report_markdown,
)
from tests.support.builders import (
    clf_clusters,
    clf_config,
    clf_embeddings_stage,
    clf_single_thread,
    clf_splits,
    clf_subset_stage,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with clf_single_thread():
        yield


def _labels(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Noisy labels where class 5 never occurs in y_true and class 6 is never predicted."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 6, 300))
    y_true[:20] = 6
    return y_true, y_pred, [f"c{i}" for i in range(7)]


def test_report_equals_sklearn() -> None:
    y_true, y_pred, names = _labels()
    ours = {
        row["class_name"]: row
        for row in classification_report_table(y_true, y_pred, names).to_pylist()
    }
    theirs = classification_report(
        y_true, y_pred, labels=list(range(7)), target_names=names, output_dict=True, zero_division=0
    )
    for name in [*names, "macro avg", "weighted avg"]:
        for ours_key, their_key in (
            ("precision", "precision"),
            ("recall", "recall"),
            ("f1", "f1-score"),
            ("support", "support"),
        ):
            assert ours[name][ours_key] == pytest.approx(theirs[name][their_key], abs=1e-12)
    assert ours["accuracy"]["f1"] == pytest.approx(theirs["accuracy"])
    assert ours["accuracy"]["label"] is None and ours["c3"]["label"] == 3


def test_report_rows_and_markdown() -> None:
    y_true, y_pred, names = _labels()
    report = classification_report_table(y_true, y_pred, names)
    assert report.column("class_name").to_pylist()[-3:] == ["accuracy", "macro avg", "weighted avg"]
    markdown = report_markdown(report)
    assert markdown.startswith("| label | class | precision | recall | f1-score | support |")
    assert len(markdown.strip().splitlines()) == 2 + len(names) + 3


def test_confusion_matrix_table_is_dense_and_row_normalised() -> None:
    y_true, y_pred, names = _labels()
    counts = confusion_counts(y_true, y_pred, len(names))
    assert np.array_equal(counts, confusion_matrix(y_true, y_pred, labels=list(range(7))))
    table = confusion_matrix_table(counts, names).to_pylist()
    assert len(table) == 49
    cell = next(r for r in table if r["true_label"] == 2 and r["pred_label"] == 4)
    assert cell["true_name"] == "c2" and cell["pred_name"] == "c4"
    assert cell["rate"] == pytest.approx(counts[2, 4] / counts[2].sum())
    # Class 5 has no test samples: its rates are unknown, not 0.
    assert all(r["rate"] is None for r in table if r["true_label"] == 5)


def test_predictions_table_top5() -> None:
    probabilities = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], dtype=np.float32)
    table = predictions_table(np.array([7, 9]), np.array([1, 2]), probabilities, ["a", "b", "c"])
    rows = table.to_pylist()
    assert rows[0]["y_pred"] == 1 and rows[0]["pred_name"] == "b" and rows[1]["true_name"] == "c"
    assert rows[0]["probability"] == pytest.approx(0.6)
    assert rows[1]["top5_labels"] == [0, 2, 1]  # fewer than 5 classes: all of them, best first
    assert rows[1]["top5_probabilities"] == pytest.approx([0.5, 0.3, 0.2])


def test_evaluate_task(tmp_path) -> None:
    names = [f"class_{i}" for i in range(4)]
    x, labels = clf_clusters(4, 50)
    split = clf_splits(labels)
    embeddings = clf_embeddings_stage(tmp_path, x, labels, names)
    subset = clf_subset_stage(tmp_path, labels, split, names)
    config = clf_config(tmp_path)
    with disable_run_logger():
        model = classifier.classifier_task.fn(embeddings, subset, config.params.classifier)
        manifest = evaluate.evaluate_task.fn(model, embeddings, subset, config.params.common)
    assert set(manifest.files) == {
        "predictions.parquet",
        "classification_report.parquet",
        "classification_report.md",
        "confusion_matrix.parquet",
    }
    assert manifest.info["accuracy"] >= 0.95
    assert manifest.files["predictions.parquet"].rows == (split == "test").sum()
    assert manifest.files["confusion_matrix.parquet"].rows == 16
    # DuckDB reads the tables as they are.
    path = manifest.path("predictions.parquet")
    accuracy = duckdb.sql(f"select avg((y_true = y_pred)::int) from '{path}'").fetchall()[0][0]
    assert accuracy == pytest.approx(manifest.info["accuracy"])
    total = duckdb.sql(
        f"select sum(count) from '{manifest.path('confusion_matrix.parquet')}'"
    ).fetchall()[0][0]
    assert total == (split == "test").sum()
    report = Location(manifest.url).read_bytes("classification_report.md").decode()
    assert "| accuracy |" in report
