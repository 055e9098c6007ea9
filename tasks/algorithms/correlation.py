"""Rank correlation of two measurements over the pairs where both are defined."""

from __future__ import annotations

import numpy as np


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Spearman rank correlation over the finite pairs, and their number (NaN if undefined)."""
    from scipy import stats  # scipy.stats loads in seconds: only where a correlation is needed

    keep = np.isfinite(x) & np.isfinite(y)
    n = int(keep.sum())
    if n < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan"), n
    return float(stats.spearmanr(x[keep], y[keep]).statistic), n
