"""Confusion statistics: the seed's mu + k*sigma rule and a per-pair binomial test.

Pure: count matrices in, the ``confusion_pairs`` table out; the ``confusion`` stage and
``analyze-predictions`` write it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pyarrow as pa

from storage import registry
from tasks.algorithms.classification import class_scores
from tasks.algorithms.label_noise import CONFUSION_DEFECT_COLUMNS, defect_columns

Rule = Literal["sigma", "binomial"]


def wilson_interval(
    count: np.ndarray, n: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of count/n; (0, 1) where n is 0."""
    from scipy import stats  # here, not at import: a cached run never needs it

    count, n = np.asarray(count, float), np.asarray(n, float)
    z = stats.norm.ppf(0.5 + confidence / 2)
    safe_n = np.maximum(n, 1)
    p = count / safe_n
    denominator = 1 + z**2 / safe_n
    centre = (p + z**2 / (2 * safe_n)) / denominator
    half = z * np.sqrt(p * (1 - p) / safe_n + z**2 / (4 * safe_n**2)) / denominator
    low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    return np.where(n > 0, low, 0.0), np.where(n > 0, high, 1.0)


def off_diagonal_mask(counts: np.ndarray) -> np.ndarray:
    """Cells (i, j), i != j, of rows whose class has test samples: the candidate pairs."""
    mask = ~np.eye(len(counts), dtype=bool)
    return mask & (counts.sum(axis=1) > 0)[:, None]


def sigma_threshold(counts: np.ndarray, k: float) -> float:
    """T = mu + k*sigma of the row-normalised rates over all candidate cells, zeros included."""
    support = counts.sum(axis=1, keepdims=True)
    rates = (counts / np.maximum(support, 1))[off_diagonal_mask(counts)]
    if rates.size == 0:
        return float("inf")
    return float(rates.mean() + k * rates.std())  # population sigma (ddof=0), as the seed's numpy


def base_rate(counts: np.ndarray) -> float:
    """A cell's rate if errors spread evenly: off-diagonal errors / sum of support * (K-1)."""
    mask = off_diagonal_mask(counts)
    trials = (counts.sum(axis=1) * (len(counts) - 1)).sum()
    return float(counts[mask].sum() / trials) if trials else 0.0


def binomial_p_values(counts: np.ndarray, rate: float) -> np.ndarray:
    """One-sided P(X >= count), X ~ Binomial(row support, rate), for every cell."""
    support = np.broadcast_to(counts.sum(axis=1, keepdims=True), counts.shape)
    from scipy import stats

    return np.where(counts > 0, stats.binom.sf(counts - 1, support, rate), 1.0)


def q_values(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values)."""
    if p_values.size == 0:
        return p_values
    from scipy import stats

    return stats.false_discovery_control(p_values, method="bh")


def confusion_pairs(
    counts: np.ndarray,
    class_names: Sequence[str],
    *,
    k: float,
    alpha: float,
    rule: Rule,
    coarse_names: Sequence[str | None] | None = None,
    cosine: np.ndarray | None = None,
    defects: Mapping[str, np.ndarray] | None = None,
) -> pa.Table:
    """The ``confusion_pairs`` table: directed pairs with count > 0, sorted by MisRate desc.

    ``defects``: the neighbours stage's K x K count matrices over these labels
    (``label_noise.pair_count_matrices``); without them those four columns are null.

    Every candidate cell (count 0 included) enters mu, sigma and the Benjamini-Hochberg
    correction, so dropping zero-count rows from the output changes no number in it.
    """
    if rule not in ("sigma", "binomial"):
        raise ValueError(f"unknown confusion rule {rule!r}; use 'sigma' or 'binomial'")
    counts = np.asarray(counts, np.int64)
    support = counts.sum(axis=1)
    mask = off_diagonal_mask(counts)
    p_all = binomial_p_values(counts, base_rate(counts))
    q_all = np.ones(counts.shape)
    q_all[mask] = q_values(p_all[mask])
    threshold = sigma_threshold(counts, k)
    rows, cols = np.nonzero(mask & (counts > 0))
    n, hits = support[rows], counts[rows, cols]
    rate = hits / n
    # Stable order: MisRate, then count, then labels, so ties never reshuffle between runs.
    order = np.lexsort((cols, rows, -hits, -rate))
    rows, cols, n, hits, rate = rows[order], cols[order], n[order], hits[order], rate[order]
    scores = class_scores(counts)
    low, high = wilson_interval(hits, n)
    flagged_sigma, flagged_binomial = rate >= threshold, q_all[rows, cols] <= alpha
    names = np.asarray(class_names, dtype=object)
    coarse = list(coarse_names) if coarse_names is not None else [None] * len(names)
    same = [
        None if coarse[i] is None or coarse[j] is None else coarse[i] == coarse[j]
        for i, j in zip(rows, cols, strict=True)
    ]
    cosine = np.full(counts.shape, np.nan) if cosine is None else cosine
    return pa.table(
        {
            "True": names[rows],
            "Pred": names[cols],
            "MisRate": rate,
            "Precision(Pred)": scores["precision"][cols],
            "Recall(True)": scores["recall"][rows],
            "F1(True)": scores["f1"][rows],
            "F1(Pred)": scores["f1"][cols],
            "true_label": rows.astype(np.int32),
            "pred_label": cols.astype(np.int32),
            "count": hits,
            "support": n,
            "ci_low": low,
            "ci_high": high,
            "p_value": p_all[rows, cols],
            "q_value": q_all[rows, cols],
            "threshold": np.full(len(rows), threshold),
            "flagged_sigma": flagged_sigma,
            "flagged_binomial": flagged_binomial,
            "flagged": flagged_sigma if rule == "sigma" else flagged_binomial,
            "same_superclass": pa.array(same, pa.bool_()),
            "centroid_cosine": pa.array(cosine[rows, cols], from_pandas=True),  # NaN -> null
            **defect_columns(defects, rows, cols, CONFUSION_DEFECT_COLUMNS),
        },
        schema=registry.table("confusion_pairs").schema(),
    )


def counts_from_table(confusion_matrix: pa.Table, num_classes: int) -> np.ndarray:
    """The K x K count matrix back from the long ``confusion_matrix`` table."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    true, pred = (confusion_matrix.column(c).to_numpy() for c in ("true_label", "pred_label"))
    counts[true, pred] = confusion_matrix.column("count").to_numpy()
    return counts


def pair_summary(pairs: pa.Table) -> dict[str, int]:
    """Counts of flagged pairs, for manifests and logs."""
    return {
        c: int(np.sum(pairs.column(c).to_numpy(zero_copy_only=False)))
        for c in ("flagged", "flagged_sigma", "flagged_binomial")
    }
