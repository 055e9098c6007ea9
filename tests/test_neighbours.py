"""kNN over all embeddings: exact against brute force, streamed shards, approximate recall."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.algorithms import neighbours as nb


def _unit(rows: int, dim: int, seed: int, clusters: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, dim)).astype(np.float32)
    if clusters:
        x += 2 * rng.normal(size=(clusters, dim)).astype(np.float32)[np.arange(rows) % clusters]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reader(x: np.ndarray, shard: int) -> nb.ShardReader:
    return lambda: (x[i : i + shard] for i in range(0, len(x), shard))


def _brute(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def test_exact_knn_matches_brute_force_and_leaves_out_each_row_itself() -> None:
    x = _unit(300, 24, seed=0)
    found = nb.knn(_reader(x, 64), len(x), 24, k=5, gpu=False)
    positions, cosine = _brute(x, 5)
    assert found.kind == "flat" and found.recall == 1.0
    np.testing.assert_array_equal(found.neighbours.queries, np.arange(300))
    np.testing.assert_array_equal(found.neighbours.positions, positions)
    np.testing.assert_allclose(found.neighbours.cosine, cosine, atol=1e-5)
    assert not (found.neighbours.positions == np.arange(300)[:, None]).any()


def test_exact_copies_find_each_other_not_themselves() -> None:
    x = _unit(100, 16, seed=1)
    x[50] = x[7]  # a tie with the query itself: the copy must stay, the row itself must go
    found = nb.knn(_reader(x, 30), len(x), 16, k=3, gpu=False).neighbours
    assert found.positions[7, 0] == 50 and found.positions[50, 0] == 7
    assert found.cosine[7, 0] == pytest.approx(1.0, abs=1e-6)


def test_result_does_not_depend_on_the_shard_size() -> None:
    x = _unit(257, 8, seed=2)
    one = nb.knn(_reader(x, 257), len(x), 8, k=4, gpu=False).neighbours
    many = nb.knn(_reader(x, 10), len(x), 8, k=4, gpu=False).neighbours
    np.testing.assert_array_equal(one.positions, many.positions)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_recall_exact_neighbours(kind: nb.IndexKind) -> None:
    x = _unit(4000, 32, seed=3, clusters=20)
    read = _reader(x, 1000)
    approximate = nb.knn(read, len(x), 32, k=10, gpu=False, kind=kind, recall_sample=4000)
    exact = nb.knn(read, len(x), 32, k=10, gpu=False).neighbours
    truth = nb.recall(approximate.neighbours, exact)
    assert truth >= 0.95
    # With the whole set as the sample, the logged recall is the true one.
    assert approximate.recall == pytest.approx(truth)


def test_sampled_recall_is_measured_against_streamed_exact_search() -> None:
    x = _unit(500, 16, seed=4)
    read = _reader(x, 64)
    exact = nb.knn(read, len(x), 16, k=5, gpu=False).neighbours
    assert nb.sample_recall(exact, read, 5, size=100) == 1.0
    # Damage half of the rows' neighbour lists: recall falls to about 1 - 0.5 * 2/5.
    damaged = exact.positions.copy()
    damaged[::2, :2] = -1
    broken = nb.Neighbours(exact.queries, damaged, exact.cosine)
    assert nb.recall(broken, exact) == pytest.approx(0.8)
    assert 0.7 < nb.sample_recall(broken, read, 5, size=200) < 0.9


def test_size_and_device_choose_the_index() -> None:
    assert nb.choose_index(1000, gpu=False) == "flat"
    assert nb.choose_index(nb.EXACT_MAX_ROWS + 1, gpu=False) == "ivf"
    assert nb.choose_index(10**7, gpu=True) == "flat"
    x = _unit(600, 16, seed=5, clusters=6)
    found = nb.knn(_reader(x, 100), len(x), 16, k=5, gpu=False, exact_max_rows=500)
    assert found.kind == "ivf" and 0.9 <= found.recall <= 1.0


def test_bad_k_and_wrong_row_counts_fail_before_the_search() -> None:
    x = _unit(20, 4, seed=6)
    with pytest.raises(ValueError, match=r"k must lie in 1\.\.19"):
        nb.knn(_reader(x, 8), 20, 4, k=20, gpu=False)
    with pytest.raises(ValueError, match="at most 2047 on a GPU"):
        nb.check_k(4000, 10**6, gpu=True)
    with pytest.raises(ValueError, match="shards hold 20 rows, the manifest says 25"):
        nb.knn(_reader(x, 8), 25, 4, k=3, gpu=False)


def test_ivf_training_sample_spans_every_shard_of_a_class_sorted_dataset() -> None:
    # Sorted by class, like an image folder: the first shard holds only the first classes.
    x = _unit(4000, 32, seed=7, clusters=20)
    x = x[np.argsort(np.arange(4000) % 20, kind="stable")]
    read = _reader(x, 500)
    sample = nb._stride_sample(read, 4000, 400)
    assert len(sample) == 400
    np.testing.assert_array_equal(sample, x[::10])
    found = nb.knn(read, len(x), 32, k=10, gpu=False, kind="ivf", recall_sample=500)
    assert found.recall >= 0.95
