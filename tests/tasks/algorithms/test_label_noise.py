"""label_suspects and the per-pair counts: flipped labels stand out, look-alike classes do not."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tasks.algorithms import label_noise as ln
from tasks.algorithms import neighbours as nb

NAMES = ["maple", "oak", "bus", "whale"]


def _dataset(seed: int) -> tuple[nb.Neighbours, pa.Table, list[int]]:
    """Maple and oak share one cluster (labels at random), bus and whale have their own; three
    bus images are labelled maple, oak and whale. Returns the kNN, keys and the flipped ids."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 32)) * 3
    cluster = np.repeat([0, 1, 2], [200, 100, 100])
    x = (centres[cluster] + rng.normal(size=(400, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.where(cluster == 0, rng.integers(0, 2, 400), cluster + 1)
    flipped = [210, 250, 290]
    labels[flipped] = [0, 1, 3]
    keys = pa.table(
        {
            "sample_id": pa.array(np.arange(400) + 1000, pa.int64()),
            "split": ["train"] * 300 + ["test"] * 100,
            "label": pa.array(labels, pa.int32()),
            "class_name": [NAMES[label] for label in labels],
        }
    )
    found = nb.knn(lambda: [x[:150], x[150:]], 400, 32, k=10, gpu=False).neighbours
    return found, keys, [1000 + i for i in flipped]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flipped_labels_are_the_only_suspects(seed: int) -> None:
    found, keys, flipped = _dataset(seed)
    suspects = ln.label_suspects(found, keys, NAMES)
    assert sorted(suspects["sample_id"].to_pylist()) == flipped
    assert set(suspects["majority_class"].to_pylist()) == {"bus"}
    assert min(suspects["majority_share"].to_pylist()) >= 0.7  # the other flips may be near
    assert max(suspects["own_share"].to_pylist()) <= 0.2
    assert max(suspects["expected_share"].to_pylist()) < 0.05
    assert suspects["score"].to_pylist() == sorted(suspects["score"].to_pylist(), reverse=True)


def test_without_the_class_profile_look_alike_classes_would_flood_the_table() -> None:
    found, keys, flipped = _dataset(0)
    # alpha near 1 leaves only the classic rule (most neighbours carry another label).
    classic = ln.label_suspects(found, keys, NAMES, alpha=0.999)
    assert set(flipped) < set(classic["sample_id"].to_pylist())
    assert len(classic) > 10 * len(flipped)
    assert set(classic["class_name"].to_pylist()) >= {"maple", "oak"}


def test_pair_counts_split_an_overlap_into_its_defects() -> None:
    duplicates = pa.table(
        {
            "sample_id_a": [1, 2, 3, 4],
            "split_a": ["train", "train", "train", "test"],
            "label_a": [0, 1, 0, 0],
            "sample_id_b": [11, 12, 13, 14],
            "split_b": ["train", "test", "test", "train"],
            "label_b": [1, 0, 0, 2],
        }
    )
    suspects = pa.table({"label": [0, 0, 1, 2], "majority_label": [1, 1, 2, 0]})
    counts = ln.pair_counts(np.array([0, 1, 0]), np.array([1, 2, 3]), duplicates, suspects)
    np.testing.assert_array_equal(counts["cross_class_duplicates"], [2, 0, 0])
    np.testing.assert_array_equal(counts["suspects_a_to_b"], [2, 1, 0])
    np.testing.assert_array_equal(counts["suspects_b_to_a"], [0, 0, 0])
    # Test images 4, 12 and 13 (labelled 0, 0, 0) have a copy in train.
    np.testing.assert_array_equal(counts["leaked_test"], [3, 0, 3])


def test_pair_count_matrices_hold_pair_counts_and_a_subset_s_classes_in_its_order() -> None:
    duplicates = pa.table(
        {"label_a": [0, 2, 2], "label_b": [2, 1, 0], "split_a": ["train"] * 3}
        | {"split_b": ["train", "test", "train"], "sample_id_a": [1, 2, 3]}
        | {"sample_id_b": [4, 5, 6]}
    )
    suspects = pa.table({"label": [2, 2, 1], "majority_label": [0, 0, 2]})
    full = ln.pair_count_matrices(3, duplicates, suspects)
    a, b = np.divmod(np.arange(9), 3)
    counts = ln.pair_counts(a, b, duplicates, suspects)
    np.testing.assert_array_equal(
        full["cross_class_duplicates"].ravel(), counts["cross_class_duplicates"]
    )
    np.testing.assert_array_equal(full["suspects"].ravel(), counts["suspects_a_to_b"])
    np.testing.assert_array_equal(full["cross_class_duplicates"][[0, 2], [2, 0]], [2, 2])
    subset = ln.pair_count_matrices(3, duplicates, suspects, classes=[2, 0])
    for name, matrix in full.items():  # the subset's label 0 is class 2, its label 1 class 0
        np.testing.assert_array_equal(subset[name], matrix[np.ix_([2, 0], [2, 0])])
    assert subset["suspects"].tolist() == [[0, 2], [0, 0]]


def test_labels_outside_the_class_names_are_refused() -> None:
    found, keys, _ = _dataset(0)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        ln.label_suspects(found, keys, NAMES[:3])
