"""The torch exact search: equal to an fp32 brute force, ties by position, proven or redone."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.algorithms import neighbours as nb
from tasks.algorithms.exact_knn import exact_knn


def _brute(x: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    scores = x.astype(np.float64) @ x.T.astype(np.float64)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :keep]  # ties: lower position first
    return order, np.take_along_axis(scores, order, axis=1)


def _clustered(rows: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, dim)) + 3 * rng.normal(size=(8, dim))[np.arange(rows) % 8]
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("bf16", [True, False])
def test_equals_brute_force_and_proves_most_rows(bf16: bool) -> None:
    x = _clustered(700, 48, seed=0)
    positions, scores, redone = exact_knn(x, 11, bf16=bf16, block_rows=128, margin=32)
    expected, expected_scores = _brute(x, 11)
    np.testing.assert_array_equal(positions, expected)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    assert redone < len(x) // 2  # the bound proved most rows from their candidates


def test_rows_the_bound_cannot_prove_are_ranked_again_exactly() -> None:
    x = _clustered(300, 16, seed=1)
    positions, _, redone = exact_knn(x, 6, block_rows=64, margin=0)  # no room: all redone
    assert redone == len(x)
    np.testing.assert_array_equal(positions, _brute(x, 6)[0])


def test_more_exact_copies_than_the_margin_tie_by_position() -> None:
    x = _clustered(200, 16, seed=2)
    x[100:140] = x[5]  # 41 equal rows: ties well beyond k + margin
    positions, scores, _ = exact_knn(x, 11, block_rows=64, margin=4)
    expected, _ = _brute(x, 11)
    np.testing.assert_array_equal(positions, expected)
    np.testing.assert_array_equal(positions[5], [5, *range(100, 110)])
    np.testing.assert_allclose(scores[5], 1.0, atol=1e-6)


def test_fewer_rows_than_candidates() -> None:
    x = _clustered(9, 8, seed=3)
    positions, _, redone = exact_knn(x, 5, margin=32)
    assert redone == 0
    np.testing.assert_array_equal(positions, _brute(x, 5)[0])


def test_the_stage_search_in_torch_equals_faiss_exact() -> None:
    x = _clustered(500, 24, seed=4)
    shards = [x[:200], x[200:]]
    torch_found = nb.exact_search(lambda: iter(shards), len(x), 7, gpu=False)
    faiss_found = nb.knn(lambda: iter(shards), len(x), 24, k=7, gpu=False)
    assert faiss_found.kind == "flat"
    np.testing.assert_array_equal(torch_found.positions, faiss_found.neighbours.positions)
    np.testing.assert_allclose(torch_found.cosine, faiss_found.neighbours.cosine, atol=1e-5)
    assert not (torch_found.positions == np.arange(len(x))[:, None]).any()


def test_neighbours_closer_than_bf16_can_tell_apart_are_still_exact() -> None:
    rng = np.random.default_rng(6)
    base = rng.normal(size=(4, 64))
    x = base[np.arange(600) % 4] + 0.05 * rng.normal(size=(600, 64))  # gaps below bf16 steps
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    positions, scores, widened = exact_knn(x, 11, block_rows=128, margin=4)
    _, expected_scores = _brute(x, 11)
    assert widened > 0  # bf16 cannot rank these: the bound sends rows to the wider set
    np.testing.assert_allclose(scores, expected_scores, atol=1e-6)
    # Exact up to fp32's own rounding (a few 1e-8 here, where float64 may order two rows the other
    # way): no row whose float64 score beats a returned one by more than that is left out.
    truth = x.astype(np.float64) @ x.T.astype(np.float64)
    found = np.take_along_axis(truth, positions, axis=1)
    assert np.all(found.min(axis=1) >= expected_scores[:, -1] - 1e-6)
