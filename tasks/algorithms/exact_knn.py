"""Exact k nearest neighbours by inner product with torch: a bf16 matrix product picks
candidates, fp32 ranks them, and a bound on the bf16 error proves each row's answer exact.

On 60k x 384 this is several times faster than FAISS's exact CPU index (``benchmarks/knn.py``)
and the same code runs on a GPU. Ties are broken by position (lower first), as a stable sort
of the fp32 scores would.
"""

from __future__ import annotations

import numpy as np
import torch

# Query rows per block: at most this many, and a block's scores (rows x N) within SCORE_BYTES.
BLOCK_ROWS = 1024
SCORE_BYTES = 256 * 2**20
# Candidates beyond k+1 kept from the bf16 scores; rows that the bound cannot prove exact with
# them are ranked again from fp32 scores of every row.
MARGIN = 32
# |bf16 score - fp32 score| <= (2u + u^2) |q| |x| from rounding both inputs (u = 2^-8, the bf16
# unit roundoff), + u |s| from rounding the product, + fp32 accumulation: 4u covers them all.
BF16_ERROR = 4 * 2.0**-8
FP32_ERROR = 1e-5  # accumulation over a few thousand dimensions


def _ranked(scores: torch.Tensor, positions: torch.Tensor, keep: int) -> tuple[torch.Tensor, ...]:
    """The ``keep`` best of each row by score, ties by lower position."""
    by_position = torch.argsort(positions, dim=1, stable=True)
    scores, positions = scores.gather(1, by_position), positions.gather(1, by_position)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :keep]
    return scores.gather(1, order), positions.gather(1, order)


def _exact_rows(
    queries: torch.Tensor, matrix: torch.Tensor, keep: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ``keep`` of each query from fp32 scores against every row (the fallback)."""
    scores = queries @ matrix.T
    positions = torch.arange(len(matrix), device=matrix.device).expand_as(scores)
    return _ranked(scores, positions, keep)


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
    many rows needed the fp32 fallback. Equal to a brute-force fp32 search with ties broken by
    position; ``bf16`` False uses fp32 for the candidates too (for CPUs without native bf16).
    """
    matrix = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(device)
    rows = len(matrix)
    candidates = min(rows, keep + margin)
    low = matrix.to(torch.bfloat16) if bf16 else matrix
    norm = float(matrix.norm(dim=1).max()) if rows else 0.0
    error = (BF16_ERROR if bf16 else FP32_ERROR) * norm * norm
    block_rows = max(1, min(block_rows, SCORE_BYTES // (4 * max(rows, 1))))
    positions = np.empty((rows, keep), dtype=np.int64)
    scores = np.empty((rows, keep), dtype=np.float32)
    fallbacks = 0
    for start in range(0, rows, block_rows):
        queries = matrix[start : start + block_rows]
        rough, picked = torch.topk(low[start : start + block_rows] @ low.T, candidates, dim=1)
        # fp32 scores of the candidates only: one small batched product per row
        gathered = torch.index_select(matrix, 0, picked.flatten()).view(*picked.shape, -1)
        exact = torch.bmm(gathered, queries[:, :, None])[:, :, 0]
        best, best_pos = _ranked(exact, picked, keep)
        # Proof: a row outside the candidates scores at most the last candidate's rough score
        # plus the error, in fp32; below the keep-th exact score it cannot belong to the answer.
        unproven = (rough[:, -1] + error >= best[:, -1]) & torch.tensor(candidates < rows)
        if bool(unproven.any()):
            redo = unproven.nonzero()[:, 0]
            best[redo], best_pos[redo] = _exact_rows(queries[redo], matrix, keep)
            fallbacks += len(redo)
        stop = start + len(queries)
        scores[start:stop] = best.float().cpu().numpy()
        positions[start:stop] = best_pos.cpu().numpy()
    return positions, scores, fallbacks
