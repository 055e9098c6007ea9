"""near_duplicates: pairs over a threshold, each once, with the kind each pair is."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tasks.algorithms import duplicates as dp
from tasks.algorithms import neighbours as nb


def _keys(splits: list[str], labels: list[int], ids: list[int] | None = None) -> pa.Table:
    return pa.table(
        {
            "sample_id": pa.array(ids if ids is not None else range(len(labels)), pa.int64()),
            "split": splits,
            "label": pa.array(labels, pa.int32()),
            "class_name": [f"c{label}" for label in labels],
        }
    )


def _knn(x: np.ndarray, k: int) -> nb.Neighbours:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return nb.knn(lambda: [x.astype(np.float32)], len(x), x.shape[1], k=k, gpu=False).neighbours


def _rows(table: pa.Table) -> list[tuple[int, int, str]]:
    return list(
        zip(
            table["sample_id_a"].to_pylist(),
            table["sample_id_b"].to_pylist(),
            table["kind"].to_pylist(),
            strict=True,
        )
    )


def test_copies_are_paired_once_with_their_kind() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 8))
    x[5] = x[0]  # same class, both train
    x[6] = x[1] + 1e-3  # another label, both train: cross_class
    x[7] = x[2]  # same label, train -> test: a leak
    x[8] = x[3]  # another label and train -> test: the label conflict wins
    labels = [0, 1, 2, 3, 4, 0, 2, 2, 1, 4]
    splits = ["train"] * 7 + ["test", "test", "test"]
    table = dp.near_duplicates(_knn(x, 3), _keys(splits, labels), threshold=0.99)
    assert sorted(_rows(table)) == [
        (0, 5, "same_class"),
        (1, 6, "cross_class"),
        (2, 7, "train_test_leak"),
        (3, 8, "cross_class"),
    ]
    assert table["cosine"].to_pylist() == sorted(table["cosine"].to_pylist(), reverse=True)
    assert table.column_names == [
        *(f"{c}_a" for c in ("sample_id", "split", "label", "class")),
        *(f"{c}_b" for c in ("sample_id", "split", "label", "class")),
        "cosine",
        "kind",
    ]
    row = table.filter(pa.compute.equal(table["sample_id_a"], 1)).to_pylist()[0]
    assert (row["class_a"], row["class_b"], row["split_b"]) == ("c1", "c2", "train")
    # Any test image with a train copy is leaked, whatever the labels.
    np.testing.assert_array_equal(dp.leaked_test_ids(table), [7, 8])


def test_pairs_are_ordered_by_sample_id_not_by_row() -> None:
    x = np.random.default_rng(1).normal(size=(6, 4))
    x[4] = x[1]
    keys = _keys(["train"] * 6, [0] * 6, ids=[60, 50, 40, 30, 20, 10])
    table = dp.near_duplicates(_knn(x, 2), keys, threshold=0.999)
    assert _rows(table) == [(20, 50, "same_class")]


def test_automatic_threshold_is_relative_to_the_median_neighbour_distance() -> None:
    nearest = np.array([0.90, 0.92, 0.94, 1.0, -np.inf])
    assert dp.auto_threshold(nearest) == pytest.approx(1 - dp.RELATIVE_RADIUS * 0.07)
    # A dataset of copies has a median distance of 0: exact copies must still qualify.
    assert dp.auto_threshold(np.ones(5)) == dp.MAX_THRESHOLD


def test_bad_threshold_says_what_a_threshold_is() -> None:
    x = np.random.default_rng(2).normal(size=(5, 4))
    with pytest.raises(ValueError, match=r"cosine and must lie in \[-1, 1\]"):
        dp.near_duplicates(_knn(x, 2), _keys(["train"] * 5, [0] * 5), threshold=1.5)
