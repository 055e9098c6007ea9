"""Drill-down: for each flagged pair, the images of each class that sit closest to the other."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.tables import embedding_matrix
from tasks.algorithms.centroids import unit_rows
from tasks.algorithms.overlap_rules import pair_columns

_SORT = [("pair_id", "ascending"), ("label", "ascending")]
_RANKING = [*_SORT, ("cos_other", "descending"), ("sample_id", "ascending")]
_CANDIDATE = pa.schema(
    [
        ("pair_id", pa.int32()),
        ("sample_id", pa.int64()),
        ("split", pa.string()),
        ("label", pa.int32()),
        ("class_name", pa.string()),
        ("cos_own", pa.float64()),
        ("cos_other", pa.float64()),
    ]
)


def shard_candidates(shard: pa.Table, centroids: np.ndarray, pairs: np.ndarray) -> pa.Table:
    """Every image of a flagged class, once per (pair, side), with cosine to both centroids."""
    labels = shard.column("label").to_numpy()
    wanted = np.flatnonzero(np.isin(labels, pairs.ravel()))
    if wanted.size == 0 or len(pairs) == 0:
        return _CANDIDATE.empty_table()
    shard = shard.take(pa.array(wanted))
    labels = labels[wanted]
    vectors = unit_rows(embedding_matrix(shard))
    cos_own = np.einsum("ij,ij->i", vectors, centroids[labels])
    rows, pair_ids, cos_other = [], [], []
    for pair_id, (a, b) in enumerate(pairs):
        for own, other in ((a, b), (b, a)):
            members = np.flatnonzero(labels == own)
            rows.append(members)
            pair_ids.append(np.full(members.size, pair_id, dtype=np.int32))
            cos_other.append(vectors[members] @ centroids[other])
    index = np.concatenate(rows)
    picked = shard.take(pa.array(index))
    return pa.table(
        {
            "pair_id": pa.array(np.concatenate(pair_ids)),
            "sample_id": picked.column("sample_id"),
            "split": picked.column("split"),
            "label": picked.column("label"),
            "class_name": picked.column("class_name"),
            "cos_own": pa.array(cos_own[index]),
            "cos_other": pa.array(np.concatenate(cos_other)),
        },
        schema=_CANDIDATE,
    )


def keep_top(candidates: pa.Table, n: int) -> pa.Table:
    """The ``n`` rows per (pair_id, label) closest to the other centroid, ranked, ties by id."""
    ranked = candidates.sort_by(_RANKING)
    if ranked.num_rows == 0:
        return ranked.append_column("rank", pa.array([], pa.int32()))
    keys = np.stack([ranked.column(c).to_numpy() for c, _ in _SORT], axis=1)
    starts = np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(keys)), 0))
    rank = np.arange(len(keys)) - group_start + 1
    keep = rank <= n
    return ranked.filter(pa.array(keep)).append_column(
        "rank", pa.array(rank[keep].astype(np.int32))
    )


def top_pair_samples(
    shards: Iterable[pa.Table],
    centroids: np.ndarray,
    pairs: np.ndarray,
    names: Sequence[str],
    n: int,
) -> pa.Table:
    """``pair_samples``: ``n`` rows per flagged pair and side, streaming (only those are held).

    Columns: pair_id, label_a, class_a, label_b, class_b, sample_id, split, label, class_name,
    cos_own, cos_other, margin, rank.
    """
    centroids = unit_rows(centroids)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    best = _CANDIDATE.empty_table()
    for shard in shards:
        merged = pa.concat_tables([best, shard_candidates(shard, centroids, pairs)])
        best = keep_top(merged, n).drop_columns("rank")
    best = keep_top(best, n)
    pair_ids = best.column("pair_id").to_numpy().astype(np.int64)
    a, b = pairs[pair_ids, 0], pairs[pair_ids, 1]
    return pa.table(
        {
            "pair_id": best.column("pair_id"),
            **pair_columns(a, b, names),
            "sample_id": best.column("sample_id"),
            "split": best.column("split"),
            "label": best.column("label"),
            "class_name": best.column("class_name"),
            "cos_own": pc.cast(best.column("cos_own"), pa.float32()),
            "cos_other": pc.cast(best.column("cos_other"), pa.float32()),
            "margin": pc.cast(
                pc.subtract(best.column("cos_own"), best.column("cos_other")), pa.float32()
            ),
            "rank": best.column("rank"),
        }
    )
