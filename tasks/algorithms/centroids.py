"""Class centroids streamed from shards, their all-pairs cosine (FAISS) and neighbour ranks.

Pure: arrays and tables in and out; the ``class_similarity`` stage writes what they return.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa

from storage.tables import embedding_matrix
from tasks.algorithms.overlap_rules import pair_columns

SHOW_IDS = 5


def check_finite(embeddings: np.ndarray, sample_ids: np.ndarray, where: str = "") -> None:
    """Refuse NaN or infinite embeddings, naming the first few sample_ids."""
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        ids = sample_ids[bad][:SHOW_IDS].tolist()
        raise ValueError(
            f"{int(bad.sum())} embedding(s) contain NaN or inf{where} (sample_id {ids}"
            f"{', ...' if bad.sum() > SHOW_IDS else ''}); re-run extraction for those images "
            "(at fp32 with --precision fp32 if bf16 overflowed)"
        )


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64 (zero rows stay zero)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, np.finfo(np.float64).tiny)


def check_labels(labels: np.ndarray, num_classes: int, where: str = "") -> np.ndarray:
    """``labels`` as int64; ValueError (prefixed by ``where``) when one is outside 0..K-1."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{where}labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}"
        )
    return labels


def class_sums(
    labels: np.ndarray, embeddings: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class sums of unit embeddings (float64) and row counts: one shard's partial result."""
    labels = check_labels(labels, num_classes)
    import scipy.sparse as sp  # here, not at import: a cached run never needs it

    # A sparse one-hot (classes x rows) times the rows sums each class in one BLAS call.
    onehot = sp.csr_matrix(
        (np.ones(labels.size), (labels, np.arange(labels.size))), shape=(num_classes, labels.size)
    )
    return np.asarray(onehot @ unit_rows(embeddings)), np.bincount(labels, minlength=num_classes)


def centroids_from_sums(
    sums: np.ndarray, counts: np.ndarray, class_names: Sequence[str]
) -> np.ndarray:
    """Unit-length class means (float32); every class must have rows."""
    empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise ValueError(
            f"{len(empty)} class(es) have no embeddings: {empty[:SHOW_IDS]}; a class listed in "
            "class_names needs images (remove its folder or check the dataset loader)"
        )
    means = unit_rows(sums / counts[:, None])
    if not np.isfinite(means).all() or (np.linalg.norm(means, axis=1) < 0.5).any():
        raise ValueError("a class centroid is zero: its embeddings cancel out exactly")
    return means.astype(np.float32)


def stream_centroids(
    shards: Iterable[pa.Table], class_names: Sequence[str], dim: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Centroids and counts from shards read one at a time: memory does not grow with N."""
    num_classes = len(class_names)
    sums, counts = None, np.zeros(num_classes, dtype=np.int64)
    for index, shard in enumerate(shards):
        matrix = embedding_matrix(shard)
        dim = matrix.shape[1] if dim is None else dim
        if matrix.shape[1] != dim:
            raise ValueError(
                f"shard {index} has embeddings of dimension {matrix.shape[1]}, expected {dim}: "
                "shards from different models are mixed; re-run extraction into a clean folder"
            )
        sums = np.zeros((num_classes, dim)) if sums is None else sums
        check_finite(matrix, shard.column("sample_id").to_numpy(), f" in shard {index}")
        shard_sums, shard_counts = class_sums(shard.column("label").to_numpy(), matrix, num_classes)
        sums += shard_sums
        counts += shard_counts
    if sums is None:
        raise ValueError("no embedding shards to compute centroids from")
    return centroids_from_sums(sums, counts, class_names), counts


def cosine_matrix(centroids: np.ndarray) -> np.ndarray:
    """All-pairs cosine (float32, symmetric) of unit centroids: one small matrix product.

    A few thousand classes at most: milliseconds on any CPU, so no index and no GPU.
    """
    vectors = np.asarray(centroids, dtype=np.float64)
    matrix = vectors @ vectors.T
    # Blocked products can round (a, b) and (b, a) apart; one value per pair keeps tables agreeing.
    return ((matrix + matrix.T) / 2).astype(np.float32)


def neighbour_ranks(cosine: np.ndarray) -> np.ndarray:
    """rank[a, b] = place of b among a's most similar other classes (1 = nearest); diagonal 0."""
    n = len(cosine)
    scores = np.asarray(cosine, dtype=np.float64).copy()
    np.fill_diagonal(scores, -np.inf)
    # Stable sort: ties go to the lower label, so ranks are reproducible.
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty((n, n), dtype=np.int32)
    np.put_along_axis(ranks, order, np.arange(1, n + 1, dtype=np.int32)[None, :], axis=1)
    np.fill_diagonal(ranks, 0)
    return ranks


def centroids_table(centroids: np.ndarray, counts: np.ndarray, names: Sequence[str]) -> pa.Table:
    """The ``centroids`` table: one row per class; label, class_name, count, centroid."""
    n, dim = centroids.shape
    flat = pa.array(centroids.astype(np.float32).ravel())
    return pa.table(
        {
            "label": pa.array(np.arange(n, dtype=np.int32)),
            "class_name": pa.array(list(names), pa.string()),
            "count": pa.array(np.asarray(counts, dtype=np.int64)),
            "centroid": pa.FixedSizeListArray.from_arrays(flat, dim),
        }
    )


def similarity_table(cosine: np.ndarray, names: Sequence[str]) -> pa.Table:
    """``class_similarity``: a row per ordered pair a != b, by label_a then rank.

    Columns: label_a, class_a, label_b, class_b, cosine (of the two centroids), rank (of b
    among a's nearest classes, 1 = nearest).
    """
    ranks = neighbour_ranks(cosine)
    a, b = np.nonzero(~np.eye(len(cosine), dtype=bool))
    order = np.lexsort((ranks[a, b], a))
    a, b = a[order], b[order]
    return pa.table(
        {
            **pair_columns(a, b, names),
            "cosine": pa.array(cosine[a, b].astype(np.float32)),
            "rank": pa.array(ranks[a, b]),
        }
    )
