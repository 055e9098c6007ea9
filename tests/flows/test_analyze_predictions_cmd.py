"""``overlap analyze-predictions`` on predictions as users have them: cleanlab's NumPy arrays
(predicted labels or pred_probs, and labels.npy), CSV and Parquet, all on the real CIFAR-100
test predictions (tests/data/cifar100-test-predictions, see its README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from tests.support.builders import REAL, write_real_predictions

CLASSES = str(REAL / "classes.tsv")


def analyse(tmp_path: Path, name: str, *files: str) -> pa.Table:
    """Run the command as a user would; the confusion pairs it wrote."""
    out = tmp_path / name
    assert main(["analyze-predictions", *files, "--class-names", CLASSES, "--out", str(out)]) == 0
    return pq.read_table(out / "confusion_pairs.parquet")


def test_numpy_csv_and_parquet_predictions_give_the_same_pairs(tmp_path: Path, capsys) -> None:
    labels, predicted = REAL / "test_labels.npy", REAL / "cv_predicted_labels.npy"
    from_numpy = analyse(tmp_path, "npy", str(predicted), "--labels", str(labels))
    printed = capsys.readouterr().out
    assert "accuracy 0.6929 on 10000 predictions" in printed
    assert "report: " in printed and "explorer: " in printed
    top = from_numpy.slice(0, 2).select(["True", "Pred"]).to_pylist()
    assert top == [{"True": "boy", "Pred": "man"}, {"True": "maple_tree", "Pred": "oak_tree"}]

    parquet = write_real_predictions(tmp_path / "predictions.parquet")
    assert analyse(tmp_path, "parquet", str(parquet)).equals(from_numpy)
    csv = tmp_path / "predictions.csv"
    pacsv.write_csv(pq.read_table(parquet), csv)
    assert analyse(tmp_path, "csv", str(csv)).equals(from_numpy)

    # pred_probs (N x K floats) whose most probable class is the real prediction
    y_pred = np.load(predicted).astype(np.int64)
    probs = np.random.default_rng(0).dirichlet(np.ones(100), size=len(y_pred)) * 0.5
    probs[np.arange(len(y_pred)), y_pred] += 0.5
    np.save(tmp_path / "pred_probs.npy", probs.astype(np.float32))
    from_probs = analyse(
        tmp_path, "probs", str(tmp_path / "pred_probs.npy"), "--labels", str(labels)
    )
    assert from_probs.equals(from_numpy)


@pytest.mark.parametrize(
    ("predictions", "labels", "message"),
    [
        (np.zeros(4, np.int64), None, "pass the true labels with --labels"),
        (np.zeros(4, np.int64), np.zeros(3, np.int64), "4 predictions but 3 labels"),
        (np.zeros(4), np.zeros(4, np.int64), "must be integer labels of shape (N,)"),
        (np.array(["a", "b"], dtype=object), np.zeros(2, np.int64), "cannot read predictions"),
    ],
)
def test_bad_numpy_input_is_one_line_before_any_output(
    tmp_path: Path, capsys, predictions: np.ndarray, labels: np.ndarray | None, message: str
) -> None:
    np.save(tmp_path / "p.npy", predictions, allow_pickle=True)
    argv = ["analyze-predictions", str(tmp_path / "p.npy"), "--out", str(tmp_path / "out")]
    if labels is not None:
        np.save(tmp_path / "labels.npy", labels)
        argv += ["--labels", str(tmp_path / "labels.npy")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
