"""How stable is each flagged pair: a Poisson bootstrap of the class centroids in one pass.

Each image gets a Poisson(1) weight per resample, and a resample's centroid of a class is the
weighted mean of the class's unit embeddings. That approximates resampling each class's images
with replacement, but needs no second pass: weighted class sums accumulate shard by shard, so
memory is classes x resamples x dim, whatever the number of images. Weights are a hash of
(seed, sample_id, resample), so the result does not depend on shard boundaries or row order, and
per-shard sums computed on different workers add up to the same answer.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from threadpoolctl import threadpool_limits

from storage.schemas.overlap import OVERLAP_STABILITY
from tasks.algorithms.calibration import apply_rule
from tasks.algorithms.centroids import check_finite, check_labels, neighbour_ranks, unit_rows
from tasks.algorithms.overlap_rules import pair_columns

CHUNK_ROWS = 8192
BELOW_CUT = 10
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@functools.cache
def _thresholds() -> np.ndarray:
    """floor(P(X <= j) * 2**64) for X ~ Poisson(1): a uniform 64-bit hash z gives
    X = #{j: T_j <= z}. Computed on first use: SciPy takes a second to import, which a cached
    run must not pay."""
    from scipy import stats

    cdf = stats.poisson.cdf(np.arange(32), 1.0)
    return np.array([int(p * 2.0**64) for p in cdf if p < 1.0], dtype=np.uint64)


def _splitmix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, in place on uint64: a fast hash with well-mixed bits."""
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


def poisson_weights(sample_ids: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, rows) float32 Poisson(1) weights, a function of (seed, sample_id, resample)."""
    ids = np.asarray(sample_ids).astype(np.uint64)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        salt = _splitmix(np.array([seed], dtype=np.uint64) * _GOLDEN + _GOLDEN)
        row_keys = _splitmix(ids * _GOLDEN + salt)
        steps = np.arange(1, resamples + 1, dtype=np.uint64)[:, None] * _MIX1
        hashes = _splitmix(row_keys[None, :] + steps)
    return np.searchsorted(_thresholds(), hashes, side="right").astype(np.float32)


@dataclass
class ClassSums:
    """Per class and resample: weighted sums of unit embeddings and total weights."""

    sums: np.ndarray  # (classes, resamples, dim) float64
    weights: np.ndarray  # (classes, resamples) float64

    @property
    def resamples(self) -> int:
        """Number of resamples."""
        return self.weights.shape[1]

    def add(self, sample_ids: np.ndarray, labels: np.ndarray, unit: np.ndarray, seed: int) -> None:
        """Add one chunk of rows (unit embeddings) under its Poisson weights."""
        order = np.argsort(labels, kind="stable")
        labels, unit = labels[order], np.ascontiguousarray(unit[order], dtype=np.float32)
        weights = poisson_weights(sample_ids[order], self.resamples, seed)
        present, starts = np.unique(labels, return_index=True)
        ends = np.append(starts[1:], len(labels))
        # One (resamples x rows) @ (rows x dim) product per class present: plain BLAS, no one-hot.
        for label, start, end in zip(present, starts, ends, strict=True):
            self.sums[label] += weights[:, start:end] @ unit[start:end]
            self.weights[label] += weights[:, start:end].sum(axis=1)


def bootstrap_class_sums(
    shards: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    num_classes: int,
    *,
    resamples: int,
    seed: int,
    chunk_rows: int = CHUNK_ROWS,
) -> ClassSums:
    """Poisson-weighted class sums from (sample_ids, labels, embeddings) shards, one at a time."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    total: ClassSums | None = None
    for index, (sample_ids, labels, embeddings) in enumerate(shards):
        labels = check_labels(labels, num_classes, f"shard {index}: ")
        check_finite(embeddings, np.asarray(sample_ids), f" in shard {index}")
        if total is None:
            dim = embeddings.shape[1]
            total = ClassSums(
                np.zeros((num_classes, resamples, dim)), np.zeros((num_classes, resamples))
            )
        elif embeddings.shape[1] != total.sums.shape[2]:
            raise ValueError(
                f"shard {index} has embeddings of dimension {embeddings.shape[1]}, expected "
                f"{total.sums.shape[2]}: shards from different models are mixed"
            )
        # The per-class products are small (resamples x ~100 rows x dim): BLAS threads cost more
        # than they give (10x slower measured on 2 busy cores); shards are the unit of parallelism.
        with threadpool_limits(limits=1, user_api="blas"):
            for start in range(0, len(labels), chunk_rows):
                rows = slice(start, start + chunk_rows)
                unit = unit_rows(embeddings[rows])
                total.add(np.asarray(sample_ids)[rows], labels[rows], unit, seed)
    if total is None:
        raise ValueError("no embedding shards to bootstrap")
    return total


def tracked_pairs(cosine: np.ndarray, flagged: np.ndarray, below: int = BELOW_CUT) -> np.ndarray:
    """The flagged pairs (as given), then the ``below`` most similar pairs the rule left out."""
    a, b = np.triu_indices(len(cosine), k=1)
    order = np.lexsort((b, a, -np.asarray(cosine)[a, b]))
    flagged = np.asarray(flagged, dtype=np.int64).reshape(-1, 2)
    taken = np.zeros(cosine.shape, dtype=bool)
    taken[flagged[:, 0], flagged[:, 1]] = True
    rest = order[~taken[a[order], b[order]]][:below]
    return np.concatenate([flagged, np.stack([a[rest], b[rest]], axis=1)]).astype(np.int64)


def _resample_cosine(sums: np.ndarray) -> np.ndarray:
    """Cosine matrix of one resample's centroids (K x dim sums), NaN diagonal as the stage's."""
    centroids = unit_rows(sums)
    cosine = centroids @ centroids.T
    np.fill_diagonal(cosine, np.nan)
    return cosine


@dataclass(frozen=True)
class Stability:
    """Per tracked pair: cosine in each usable resample and whether the rule flagged it there."""

    pairs: np.ndarray  # (P, 2) int64
    cosines: np.ndarray  # (usable resamples, P) float64
    flagged: np.ndarray  # (usable resamples, P) bool
    resamples: int  # resamples drawn; those where a class drew no image are left out


def pair_stability(sums: ClassSums, pairs: np.ndarray, rule: Mapping[str, Any]) -> Stability:
    """Each pair's cosine and flag in every resample under ``rule`` ({"rule": ..., param: ...}).

    A resample in which some class drew no image (chance e^-n for a class of n images) has no
    centroid for it and is left out; it fails when no resample is usable.
    """
    usable = np.flatnonzero((sums.weights > 0).all(axis=0))
    if usable.size == 0:
        empty = int(np.argmin(sums.weights.min(axis=1)))
        raise ValueError(
            f"class {empty} has no image in any resample: every class needs images to bootstrap"
        )
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    cosines = np.empty((usable.size, len(pairs)))
    flagged = np.zeros((usable.size, len(pairs)), dtype=bool)
    with threadpool_limits(limits=1, user_api="blas"):  # small products, as in ClassSums.add
        for row, resample in enumerate(usable):
            cosine = _resample_cosine(sums.sums[:, resample, :])
            topk = rule["rule"] == "topk"
            ranks = neighbour_ranks(cosine) if topk else np.zeros(cosine.shape, int)
            hits = apply_rule(cosine, ranks, **rule).pairs
            mask = np.zeros(cosine.shape, dtype=bool)
            mask[hits[:, 0], hits[:, 1]] = True
            cosines[row] = cosine[pairs[:, 0], pairs[:, 1]]
            flagged[row] = mask[pairs[:, 0], pairs[:, 1]]
    return Stability(pairs, cosines, flagged, sums.resamples)


def stability_table(
    stability: Stability,
    cosine: np.ndarray,
    names: Sequence[str],
    flagged: int,
    *,
    confidence: float = 0.95,
) -> pa.Table:
    """One row per tracked pair, the run's ``flagged`` pairs first, then those just below the cut.

    Columns: label_a, class_a, label_b, class_b; ``cosine`` (full sample); ``flagged`` (by the
    run); ``ci_low``/``ci_high`` (percentile interval of the resampled cosine at ``confidence``);
    ``flag_rate`` (share of usable resamples in which the run's rule flags the pair).
    """
    a, b = stability.pairs[:, 0], stability.pairs[:, 1]
    tail = (1 - confidence) / 2
    low, high = np.quantile(stability.cosines, [tail, 1 - tail], axis=0)
    return pa.table(
        {
            **pair_columns(a, b, names),
            "cosine": pa.array(np.asarray(cosine)[a, b].astype(np.float32)),
            "flagged": pa.array(np.arange(len(a)) < flagged),
            "ci_low": pa.array(low, pa.float64()),
            "ci_high": pa.array(high, pa.float64()),
            "flag_rate": pa.array(stability.flagged.mean(axis=0), pa.float64()),
        },
        schema=OVERLAP_STABILITY,
    )


def run_stability(
    shards: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    cosine: np.ndarray,
    flagged: np.ndarray,
    names: Sequence[str],
    *,
    rule: Mapping[str, Any],
    resamples: int,
    seed: int,
) -> pa.Table:
    """Rows of ``overlap_stability`` for a run: its flagged pairs, then the ten just below the cut.

    ``shards``: (sample_ids, labels, embeddings) per shard; ``cosine``: the run's K x K matrix.
    """
    sums = bootstrap_class_sums(shards, len(names), resamples=resamples, seed=seed)
    pairs = tracked_pairs(cosine, flagged)
    return stability_table(pair_stability(sums, pairs, rule), cosine, names, len(flagged))


def with_stability(pairs: pa.Table, stability: pa.Table | None) -> pa.Table:
    """``overlap_pairs`` rows (``overlap_pairs_table``'s, whose ci_low, ci_high and flag_rate are
    null) with those columns taken from ``stability``; unchanged without a bootstrap."""
    if stability is None:
        return pairs
    flagged = stability.slice(0, pairs.num_rows)  # the flagged pairs come first, in order
    for column in ("label_a", "label_b"):
        if flagged.column(column).to_pylist() != pairs.column(column).to_pylist():
            raise ValueError("stability rows do not start with the flagged pairs, in order")
    for column in ("ci_low", "ci_high", "flag_rate"):
        pairs = pairs.set_column(pairs.column_names.index(column), column, flagged[column])
    return pairs
