"""Near-duplicate pairs from the kNN graph: one picture twice, under two labels or in two splits."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tasks.algorithms.neighbours import Neighbours

KINDS = ("cross_class", "train_test_leak", "same_class")
# Automatic threshold: a pair is a near-duplicate when its cosine distance (1 - cosine) is below
# this share of the dataset's median nearest-neighbour distance (cleanlab's Datalab uses the same
# rule with 0.13). Measured on the synthetic dataset's planted copies (JPEG re-encoded, shifted in
# brightness) over seeds 0-4: copies lie at <= 0.17 of the median, the closest distinct images at
# >= 0.40; 0.25 sits between them (README, "Inside each overlap").
RELATIVE_RADIUS = 0.25
# Exact copies come out of bf16 extraction a few 1e-7 below cosine 1: never ask for more.
MAX_THRESHOLD = 0.9999


def auto_threshold(nearest_cosine: np.ndarray, relative: float = RELATIVE_RADIUS) -> float:
    """Cosine threshold from each row's nearest-neighbour cosine: 1 - relative * median distance."""
    nearest = np.asarray(nearest_cosine, dtype=np.float64)
    nearest = nearest[np.isfinite(nearest)]
    if nearest.size == 0:
        raise ValueError("no neighbours to derive a duplicate threshold from; pass threshold=")
    distance = float(np.median(1.0 - nearest))
    return min(1.0 - relative * max(distance, 0.0), MAX_THRESHOLD)


def candidate_pairs(
    neighbours: Neighbours, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unordered row pairs (a < b) whose cosine reaches ``threshold``, each once, with cosine."""
    rows = np.repeat(neighbours.queries, neighbours.k)
    cols = neighbours.positions.ravel()
    cosine = neighbours.cosine.ravel()
    keep = (cols >= 0) & (cosine >= threshold)
    a, b, cosine = rows[keep], cols[keep], cosine[keep]
    a, b = np.minimum(a, b), np.maximum(a, b)
    # Each pair is usually found from both ends: keep the first, by position pair.
    _, first = np.unique(np.stack([a, b], axis=1), axis=0, return_index=True)
    return a[first], b[first], cosine[first]


def pair_kind(
    labels_a: np.ndarray, labels_b: np.ndarray, splits_a: np.ndarray, splits_b: np.ndarray
) -> np.ndarray:
    """cross_class where the labels differ (one copy is mislabelled, whatever the splits);
    else train_test_leak where one copy is in train and the other in test; else same_class."""
    leak = ((splits_a == "train") & (splits_b == "test")) | (
        (splits_a == "test") & (splits_b == "train")
    )
    return np.where(labels_a != labels_b, KINDS[0], np.where(leak, KINDS[1], KINDS[2]))


def near_duplicates(
    neighbours: Neighbours, keys: pa.Table, *, threshold: float | None = None
) -> pa.Table:
    """Pairs of images with cosine >= ``threshold`` among each other's k nearest neighbours.

    ``keys`` holds sample_id, split, label and class_name for every row, in the order the
    neighbour positions refer to. ``threshold`` None derives it with ``auto_threshold``.
    A group of more than k+1 copies yields only the pairs within each member's k neighbours.

    Returns one row per unordered pair, most similar first (ties by sample ids), columns:
    sample_id_a, split_a, label_a, class_a (the copy with the smaller sample_id),
    sample_id_b, split_b, label_b, class_b (the other), cosine (float32) and kind:
    ``cross_class`` (labels differ), ``train_test_leak`` (same label, one in train, one in
    test) or ``same_class``.
    """
    if threshold is None:
        threshold = auto_threshold(neighbours.cosine[:, 0])
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine and must lie in [-1, 1], got {threshold}")
    a, b, cosine = candidate_pairs(neighbours, threshold)
    ids = keys.column("sample_id").to_numpy()
    # Order by sample_id, not row position: the table reads the same on any shard layout.
    swap = ids[a] > ids[b]
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    order = np.lexsort((ids[b], ids[a], -cosine))
    a, b, cosine = a[order], b[order], cosine[order]
    splits = np.asarray(keys.column("split").to_pylist(), dtype=object)
    labels = keys.column("label").to_numpy()
    names = np.asarray(keys.column("class_name").to_pylist(), dtype=object)
    columns: dict[str, pa.Array] = {}
    for side, rows in (("a", a), ("b", b)):
        columns[f"sample_id_{side}"] = pa.array(ids[rows], pa.int64())
        columns[f"split_{side}"] = pa.array(splits[rows].tolist(), pa.string())
        columns[f"label_{side}"] = pa.array(labels[rows], pa.int32())
        columns[f"class_{side}"] = pa.array(names[rows].tolist(), pa.string())
    columns["cosine"] = pa.array(cosine.astype(np.float32), pa.float32())
    kind = pair_kind(labels[a], labels[b], splits[a], splits[b])
    columns["kind"] = pa.array(kind.tolist(), pa.string())
    return pa.table(columns)


def _leaked_sides(duplicates: pa.Table) -> list[tuple[np.ndarray, np.ndarray]]:
    """(sample_ids, labels) of the test copies of train/test pairs, once per side."""
    split = {s: np.asarray(duplicates.column(f"split_{s}").to_pylist(), dtype=object) for s in "ab"}
    sides = []
    for test, train in (("a", "b"), ("b", "a")):
        rows = (split[test] == "test") & (split[train] == "train")
        ids = duplicates.column(f"sample_id_{test}").to_numpy()[rows]
        sides.append((ids, duplicates.column(f"label_{test}").to_numpy()[rows]))
    return sides


def leaked_test_ids(duplicates: pa.Table) -> np.ndarray:
    """Sorted sample_ids of test images with a near-copy in train, under any label: the leak
    count of the test split (a cross-class copy in train leaks too)."""
    return np.unique(np.concatenate([ids for ids, _ in _leaked_sides(duplicates)]))


def leaked_test_labels(duplicates: pa.Table) -> np.ndarray:
    """The label of each leaked test image (one entry per image, as ``leaked_test_ids``)."""
    sides = _leaked_sides(duplicates)
    ids = np.concatenate([ids for ids, _ in sides])
    labels = np.concatenate([labels for _, labels in sides])
    _, first = np.unique(ids, return_index=True)
    return labels[first].astype(np.int64)
