"""Poisson bootstrap of class centroids: weights, streaming sums, intervals, flag rates."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from tasks.algorithms.bootstrap import (
    bootstrap_class_sums,
    pair_stability,
    poisson_weights,
    run_stability,
    stability_table,
    tracked_pairs,
    with_stability,
)
from tasks.algorithms.calibration import apply_rule
from tasks.algorithms.centroids import cosine_matrix, neighbour_ranks, stream_centroids
from tasks.algorithms.overlap_rules import overlap_pairs_table

NUM_CLASSES, PER_CLASS, DIM = 12, 60, 32
PLANTED = ((0, 5), (2, 7), (3, 9))


def _clusters(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample_ids, labels, embeddings): noisy clusters; planted pairs have close centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(NUM_CLASSES, DIM))
    for a, b in PLANTED:
        centres[b] = centres[a] + 0.5 * rng.normal(size=DIM)
    labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), PER_CLASS))
    x = centres[labels] + 1.5 * rng.normal(size=(len(labels), DIM))
    ids = rng.permutation(len(labels)).astype(np.int64) * 7 + 3
    return ids, labels, x.astype(np.float32)


def _shards(ids: np.ndarray, labels: np.ndarray, x: np.ndarray, cuts: list[int]) -> list:
    edges = [0, *cuts, len(ids)]
    return [(ids[s:e], labels[s:e], x[s:e]) for s, e in itertools.pairwise(edges)]


def _full_cosine(labels: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The class-similarity stage's own cosine matrix (NaN diagonal, as overlap reads it)."""
    names = [f"c{i}" for i in range(NUM_CLASSES)]
    table = pa.table(
        {
            "sample_id": np.arange(len(labels)),
            "label": labels,
            "embedding": pa.FixedSizeListArray.from_arrays(x.ravel(), DIM),
        }
    )
    centroids, _ = stream_centroids([table], names)
    cosine = cosine_matrix(centroids).astype(np.float64)
    np.fill_diagonal(cosine, np.nan)
    return cosine


def test_weights_are_poisson_one_and_a_function_of_seed_sample_and_resample() -> None:
    ids = np.arange(20_000, dtype=np.int64)
    weights = poisson_weights(ids, 50, seed=3)
    assert weights.shape == (50, 20_000) and weights.dtype == np.float32
    assert weights.mean() == pytest.approx(1, abs=0.01)
    assert weights.var() == pytest.approx(1, abs=0.02)
    assert (weights == 0).mean() == pytest.approx(np.exp(-1), abs=0.005)
    assert (weights == 2).mean() == pytest.approx(np.exp(-1) / 2, abs=0.005)
    # Resamples and rows are uncorrelated.
    assert abs(np.corrcoef(weights[0], weights[1])[0, 1]) < 0.03
    assert abs(np.corrcoef(weights[:, :-1].ravel(), weights[:, 1:].ravel())[0, 1]) < 0.01
    shuffled = np.random.default_rng(0).permutation(20_000)
    np.testing.assert_array_equal(poisson_weights(ids[shuffled], 50, 3), weights[:, shuffled])
    assert not np.array_equal(poisson_weights(ids, 50, seed=4), weights)


def test_sums_match_the_weighted_class_sums_and_ignore_shard_boundaries() -> None:
    ids, labels, x = _clusters(0)
    one = bootstrap_class_sums(_shards(ids, labels, x, []), NUM_CLASSES, resamples=9, seed=1)
    three = bootstrap_class_sums(
        _shards(ids, labels, x, [100, 433]), NUM_CLASSES, resamples=9, seed=1, chunk_rows=37
    )
    weights = poisson_weights(ids, 9, seed=1).astype(np.float64)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    onehot = np.eye(NUM_CLASSES)[labels]  # rows x classes
    expected = np.einsum("ri,ic,id->crd", weights, onehot, unit)
    np.testing.assert_allclose(one.sums, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(one.weights, (weights @ onehot).T)
    np.testing.assert_allclose(three.sums, one.sums, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(three.weights, one.weights)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_planted_pairs_are_flagged_in_nearly_every_resample_and_others_almost_never(
    seed: int,
) -> None:
    ids, labels, x = _clusters(seed)
    cosine = _full_cosine(labels, x)
    rule = {"rule": "classes", "classes": 6}
    flagged = apply_rule(cosine, neighbour_ranks(cosine), **rule).pairs
    assert sorted(map(tuple, flagged.tolist())) == sorted(PLANTED)
    sums = bootstrap_class_sums(
        _shards(ids, labels, x, [300]), NUM_CLASSES, resamples=200, seed=seed
    )
    pairs = tracked_pairs(cosine, flagged)
    assert len(pairs) == len(PLANTED) + 10
    table = stability_table(
        pair_stability(sums, pairs, rule), cosine, [f"c{i}" for i in range(12)], len(flagged)
    ).to_pylist()
    for row in table:
        planted = (row["label_a"], row["label_b"]) in PLANTED
        assert row["flagged"] == planted
        assert row["flag_rate"] >= 0.95 if planted else row["flag_rate"] <= 0.05, row
        assert row["ci_low"] < row["cosine"] < row["ci_high"], row


def test_a_pair_at_the_cut_is_flagged_in_some_resamples_only() -> None:
    ids, labels, x = _clusters(0)
    cosine = _full_cosine(labels, x)
    pairs = tracked_pairs(cosine, np.empty((0, 2), int), below=1)  # the most similar pair
    a, b = pairs[0]
    rule = {"rule": "threshold", "threshold": float(cosine[a, b])}
    sums = bootstrap_class_sums([(ids, labels, x)], NUM_CLASSES, resamples=200, seed=5)
    rate = pair_stability(sums, pairs, rule).flagged.mean()
    # Neither always nor never; below one half, as resampled centroids are noisier than the
    # full-sample ones, which lowers the cosine of two close centroids (the bootstrap's bias).
    assert 0.02 < rate < 0.5


def test_poisson_bootstrap_matches_resampling_each_class_with_replacement() -> None:
    ids, labels, x = _clusters(0)
    cosine = _full_cosine(labels, x)
    pairs = tracked_pairs(cosine, np.empty((0, 2), int), below=3)
    sums = bootstrap_class_sums([(ids, labels, x)], NUM_CLASSES, resamples=400, seed=2)
    poisson = pair_stability(sums, pairs, {"rule": "sigma", "k": 3}).cosines
    rng = np.random.default_rng(0)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    members = [np.flatnonzero(labels == c) for c in range(NUM_CLASSES)]
    exact = np.empty((400, len(pairs)))
    for r in range(400):
        means = [unit[rng.choice(rows, len(rows))].mean(axis=0) for rows in members]
        centroids = np.array(means) / np.linalg.norm(means, axis=1, keepdims=True)
        exact[r] = np.einsum("pd,pd->p", centroids[pairs[:, 0]], centroids[pairs[:, 1]])
    np.testing.assert_allclose(np.median(poisson, 0), np.median(exact, 0), atol=0.01)
    np.testing.assert_allclose(poisson.std(0), exact.std(0), rtol=0.2)


def test_tracked_pairs_are_the_flagged_ones_then_the_next_most_similar() -> None:
    cosine = np.array(
        [[1, 0.9, 0.2, 0.3], [0.9, 1, 0.8, 0.1], [0.2, 0.8, 1, 0.5], [0.3, 0.1, 0.5, 1]]
    )
    flagged = np.array([[0, 1]])
    assert tracked_pairs(cosine, flagged, below=3).tolist() == [[0, 1], [1, 2], [2, 3], [0, 3]]
    assert len(tracked_pairs(cosine, flagged)) == 6  # all the pairs there are


def test_same_seed_same_result() -> None:
    ids, labels, x = _clusters(1)
    runs = [
        bootstrap_class_sums([(ids, labels, x)], NUM_CLASSES, resamples=5, seed=s).sums
        for s in (7, 7, 8)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


def test_bad_inputs_are_refused_with_a_clear_line() -> None:
    ids, labels, x = _clusters(0)
    with pytest.raises(ValueError, match="no embedding shards"):
        bootstrap_class_sums([], NUM_CLASSES, resamples=5, seed=0)
    with pytest.raises(ValueError, match="resamples must be at least 1"):
        bootstrap_class_sums([(ids, labels, x)], NUM_CLASSES, resamples=0, seed=0)
    with pytest.raises(ValueError, match="shard 1 has embeddings of dimension 16, expected 32"):
        bootstrap_class_sums(
            [(ids, labels, x), (ids, labels, x[:, :16])], NUM_CLASSES, resamples=2, seed=0
        )
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.10"):
        bootstrap_class_sums([(ids, labels, x)], 11, resamples=2, seed=0)
    bad = x.copy()
    bad[4, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in shard 0 \(sample_id \[" + str(ids[4])):
        bootstrap_class_sums([(ids, labels, bad)], NUM_CLASSES, resamples=2, seed=0)


def test_a_class_without_images_cannot_be_bootstrapped() -> None:
    ids, labels, x = _clusters(0)
    sums = bootstrap_class_sums([(ids, labels, x)], NUM_CLASSES + 1, resamples=4, seed=0)
    with pytest.raises(ValueError, match="class 12 has no image in any resample"):
        pair_stability(sums, np.array([[0, 5]]), {"rule": "sigma", "k": 3})


def test_run_stability_rows_join_the_overlap_pairs_in_order() -> None:
    ids, labels, x = _clusters(2)
    cosine = _full_cosine(labels, x)
    ranks = neighbour_ranks(cosine)
    rule = {"rule": "classes", "classes": 6}
    flagged = apply_rule(cosine, ranks, **rule)
    names = [f"c{i}" for i in range(NUM_CLASSES)]
    stability = run_stability(
        [(ids, labels, x)], cosine, flagged.pairs, names, rule=rule, resamples=50, seed=0
    )
    assert stability.num_rows == 3 + 10
    assert stability.column("flagged").to_pylist() == [True] * 3 + [False] * 10
    pairs = overlap_pairs_table(flagged, cosine, ranks, names)
    joined = with_stability(pairs, stability)
    assert joined.column("flag_rate").to_pylist() == stability.column("flag_rate").to_pylist()[:3]
    plain = with_stability(pairs, None)
    assert plain.column("ci_low").null_count == 3
    with pytest.raises(ValueError, match="do not start with the flagged pairs"):
        with_stability(pairs, stability.slice(1))
