"""Exact k nearest neighbours by inner product with torch: a bf16 matrix product picks
candidates, fp32 ranks them, and a bound on the bf16 error proves each row's answer exact.

Where the bound cannot prove a row from its first candidates, the row's candidates become every
row whose bf16 score the bound cannot rule out (a few dozen more, taken from the scores already
computed), so no row ever needs a second pass over the matrix. On 60k x 384 this is faster than
FAISS's exact CPU index (``benchmarks/knn.py``) and the same code runs on a GPU. Ties are broken
by position (lower first), as a stable sort of the fp32 scores would.
"""

from __future__ import annotations

import numpy as np
import torch

# Query rows per block: at most this many, and a block's bf16 scores (rows x N) within SCORE_BYTES.
BLOCK_ROWS = 1024
SCORE_BYTES = 256 * 2**20
# Candidates beyond ``keep`` taken from the bf16 scores at first: enough that the bound proves
# most rows (the rest widen their candidates, see ``_widened``).
MARGIN = 32
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24}
# Each term of the bound is a worst case (round-to-nearest on output, as oneDNN, cuBLAS and torch
# convert; fp32 accumulation in any order); 5% more covers the bound's own fp32 arithmetic.
# Doubling it instead left 24% of the rows of the real Fashion-MNIST embeddings unproven.
SAFETY = 1.05


def _accumulation(dim: int) -> float:
    """Relative error bound of an fp32 dot product of ``dim`` terms, in any order."""
    gamma = dim * UNIT_ROUNDOFF[torch.float32]
    return gamma / (1 - gamma)


def _rounding_residual(matrix: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """Each row's |x - round(x)| for the low-precision copy (0 when it is fp32 itself)."""
    if low.dtype == matrix.dtype:
        return torch.zeros(len(matrix), device=matrix.device)
    return (matrix - low.float()).norm(dim=1)


def _score_bound(matrix: torch.Tensor, low: torch.Tensor) -> tuple[np.ndarray, float]:
    """Per query row, the absolute error E of its low-precision scores, and the relative error c
    of rounding a product to the low-precision output, so that for every pair
    ``fp32(q.x) <= max(rough, 0) * (1 + c) + E``.

    E covers the inputs' rounding (|r_q| max|x| + |q~| max|r_x|) and the fp32 accumulation of
    both the low-precision product and the fp32 scores that rank the answer.
    """
    norms = matrix.norm(dim=1)
    residual = _rounding_residual(matrix, low)
    low_norms = low.float().norm(dim=1)
    top_norm, top_residual = float(norms.max()), float(residual.max())
    # fp32 accumulation of the low-precision product (|q~| max|x~|) and of the fp32 one that
    # ranks the answer (|q| max|x|); products of two bf16 values are exact in fp32.
    gamma = _accumulation(matrix.shape[1])
    accumulation = gamma * (low_norms * (top_norm + top_residual) + norms * top_norm)
    inputs = residual * top_norm + low_norms * top_residual
    unit = UNIT_ROUNDOFF[low.dtype] if low.dtype != matrix.dtype else 0.0
    relative = unit / (1 - unit) if unit else 0.0
    return SAFETY * (inputs + accumulation).cpu().numpy(), SAFETY * relative


def _ranked(scores: np.ndarray, positions: np.ndarray, keep: int) -> tuple[np.ndarray, ...]:
    """The ``keep`` best of each row by score, ties by lower position.

    Sorting one int64 key (the score's bits made to order as integers, then the position
    reversed) does what a stable sort by position then by score would. In numpy: torch's CPU
    sort of many short rows costs a hundred times more here.
    """
    bits = (scores.astype(np.float32) + np.float32(0)).view(np.int32)  # -0.0 ties with 0.0
    ordered = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits).astype(np.int64)
    key = (ordered << 32) | (0xFFFFFFFF - positions)
    order = np.argsort(key, axis=1)[:, ::-1][:, :keep]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(positions, order, 1)


def _rank_candidates(
    queries: torch.Tensor, matrix: torch.Tensor, picked: torch.Tensor, keep: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``keep`` best of each query's candidate rows ``picked``, by fp32 score."""
    gathered = torch.index_select(matrix, 0, picked.flatten()).view(*picked.shape, -1)
    exact = torch.bmm(gathered, queries[:, :, None])[:, :, 0]
    return _ranked(exact.cpu().numpy(), picked.cpu().numpy(), keep)


def _lowest_possible(best_last: np.ndarray, error: np.ndarray, relative: float) -> np.ndarray:
    """The rough score below which a row cannot reach ``best_last`` in fp32 (-inf where the
    bound rules nothing out)."""
    cut = (best_last.astype(np.float64) - error) / (1 + relative)
    return np.where(cut > 0, cut, -np.inf)


def _widened(rough: torch.Tensor, cut: np.ndarray) -> torch.Tensor:
    """Per row, enough of its best rough scores' positions to hold every row at or above ``cut``
    (the most any of them needs: a row holding fewer gets a few more, which ranking drops)."""
    floor = torch.from_numpy(cut).to(rough.device, torch.float32)
    wanted = int((rough.float() >= floor[:, None]).sum(dim=1).max())
    return torch.topk(rough, max(wanted, 1), dim=1, sorted=False).indices


def exact_knn(
    vectors: np.ndarray,
    keep: int,
    *,
    device: str = "cpu",
    bf16: bool = True,
    block_rows: int = BLOCK_ROWS,
    margin: int = MARGIN,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each row's ``keep`` highest inner products with all rows (itself included), best first.

    Returns positions (n x keep, int64), scores (n x keep, float32, computed in fp32) and how
    many rows the bound could not prove from their first ``keep + margin`` candidates (those
    were ranked again from a wider set). Equal to a brute-force fp32 search with ties broken by
    position; ``bf16`` False uses fp32 for the candidates too (for CPUs without native bf16).
    """
    matrix = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(device)
    rows = len(matrix)
    positions = np.empty((rows, keep), dtype=np.int64)
    scores = np.empty((rows, keep), dtype=np.float32)
    if rows == 0:
        return positions, scores, 0
    candidates = min(rows, keep + margin)
    low = matrix.to(torch.bfloat16) if bf16 else matrix
    error, relative = _score_bound(matrix, low)
    block_rows = max(1, min(block_rows, SCORE_BYTES // (low.element_size() * rows)))
    widened = 0
    for start in range(0, rows, block_rows):
        stop = min(start + block_rows, rows)
        queries = matrix[start:stop]
        rough = low[start:stop] @ low.T
        values, picked = torch.topk(rough, candidates, dim=1, sorted=False)
        best, best_pos = _rank_candidates(queries, matrix, picked, keep)
        if candidates < rows:
            # Proof: a row outside the candidates has a rough score at most the lowest
            # candidate's; if that cannot reach the keep-th fp32 score, the answer is exact.
            cut = _lowest_possible(best[:, -1], error[start:stop], relative)
            lowest = values.amin(dim=1).float().cpu().numpy()
            redo = np.flatnonzero(lowest >= cut)
            if len(redo):
                on_device = torch.from_numpy(redo).to(device)
                wider = _widened(rough[on_device], cut[redo])
                best[redo], best_pos[redo] = _rank_candidates(
                    queries[on_device], matrix, wider, keep
                )
                widened += len(redo)
        scores[start:stop], positions[start:stop] = best, best_pos
    return positions, scores, widened
