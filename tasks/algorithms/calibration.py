"""Calibrate the overlap rules: the ``classes`` rule, and what every setting of every rule flags.

The ``classes`` rule asks for the answer directly: flag the most similar pairs, in order, until N
classes are covered. Class i is covered by the pairs of cosine >= c exactly when its nearest other
class has cosine >= c, so the rule is the threshold rule at c = the N-th largest nearest-class
cosine, and the calibration grid counts pairs and classes for any cut with two sorted arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from storage.schemas.overlap import OVERLAP_CALIBRATION
from tasks.algorithms.overlap_rule import RULES
from tasks.algorithms.overlap_rules import Flagged, flag_pairs, off_diagonal_stats

K_GRID = np.round(np.arange(0.0, 6.0001, 0.25), 2)
THRESHOLD_STEP = 0.025
MAX_TOP_K = 20
MAX_CLASS_ROWS = 200


def nearest_cosine(cosine: np.ndarray) -> np.ndarray:
    """Each class's cosine to its most similar other class (the diagonal is ignored)."""
    scores = np.asarray(cosine, dtype=np.float64).copy()
    np.fill_diagonal(scores, -np.inf)
    return scores.max(axis=1)


def classes_cutoff(cosine: np.ndarray, n_classes: int) -> float:
    """The highest cosine c whose pairs (cosine >= c) cover at least ``n_classes`` classes.

    Ties: every pair at cosine c is flagged, so the result never depends on label order. The
    pairs then cover exactly ``n_classes`` classes, or more when nearest-class cosines tie at c;
    in particular N + 1 when the pair that reaches N brings two new classes at once (both have it
    as their nearest pair), since flagging pairs in order cannot add half a pair.
    """
    num_classes = len(cosine)
    if not 2 <= n_classes <= num_classes:
        raise ValueError(
            f"--overlap-classes must lie in 2..{num_classes} (the dataset has {num_classes} "
            f"classes), got {n_classes}"
        )
    return float(np.sort(nearest_cosine(cosine))[::-1][n_classes - 1])


def apply_rule(cosine: np.ndarray, ranks: np.ndarray, *, rule: str, **params: Any) -> Flagged:
    """Flag unordered pairs by any rule, ``classes`` included (see ``flag_pairs`` for the rest).

    ``classes`` takes ``classes=N``; it is the threshold rule at ``classes_cutoff``, so its pairs
    come in the same order (most similar first) and ``cutoff`` holds the cosine it chose.
    """
    if rule != "classes":
        return flag_pairs(cosine, ranks, rule=rule, **params)
    cutoff = classes_cutoff(cosine, int(params["classes"]))
    flagged = flag_pairs(cosine, ranks, rule="threshold", threshold=cutoff)
    return Flagged(flagged.pairs, flagged.mu, flagged.sigma, cutoff)


def _upper(matrix: np.ndarray) -> np.ndarray:
    """Values of the upper triangle (unordered pairs), in ``np.triu_indices`` order."""
    return np.asarray(matrix)[np.triu_indices(len(matrix), k=1)]


def _count_at_least(sorted_values: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """How many of ``sorted_values`` (ascending) are >= each cut."""
    return len(sorted_values) - np.searchsorted(sorted_values, cuts, side="left")


def _cut_rows(cosine: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs and classes flagged by ``cosine >= cut`` for each cut."""
    pairs = np.sort(_upper(np.asarray(cosine, dtype=np.float64)))
    nearest = np.sort(nearest_cosine(cosine))
    return _count_at_least(pairs, cuts), _count_at_least(nearest, cuts)


def _topk_rows(ranks: np.ndarray, top_ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs and classes flagged by the mutual top-k rule for each k."""
    mutual = np.maximum(ranks, ranks.T).astype(np.int64)
    np.fill_diagonal(mutual, np.iinfo(np.int64).max)
    pairs, best = np.sort(_upper(mutual)), np.sort(mutual.min(axis=1))
    counts = [np.searchsorted(values, top_ks, side="right") for values in (pairs, best)]
    return counts[0], counts[1]


def _grids(cosine: np.ndarray, chosen: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Each rule's parameter values: a fixed grid, the observed cosine range, and the chosen one."""
    values = _upper(np.asarray(cosine, dtype=np.float64))
    num_classes = len(cosine)
    low = np.floor(values.min() / THRESHOLD_STEP) * THRESHOLD_STEP if values.size else 0.0
    high = np.ceil(values.max() / THRESHOLD_STEP) * THRESHOLD_STEP if values.size else 1.0
    classes = np.arange(2, num_classes + 1)
    if len(classes) > MAX_CLASS_ROWS:  # many classes: a geometric grid keeps the table small
        classes = np.unique(np.geomspace(2, num_classes, MAX_CLASS_ROWS).round().astype(int))
    grids = {
        "sigma": K_GRID,
        "threshold": np.round(np.arange(low, high + THRESHOLD_STEP / 2, THRESHOLD_STEP), 3),
        "topk": np.arange(1, min(MAX_TOP_K, num_classes - 1) + 1),
        "classes": classes,
    }
    rule = chosen.get("rule")
    if rule in grids:  # the run's own setting is always a row, so it can be checked against
        grids[rule] = np.union1d(grids[rule], [chosen[RULES[rule].parameter]])
    return {name: np.asarray(grid, dtype=np.float64) for name, grid in grids.items()}


def _rule_rows(
    rule: str, grid: np.ndarray, cosine: np.ndarray, ranks: np.ndarray, mu: float, sigma: float
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Cosine cutoffs (None for topk), pairs and classes flagged for each value of ``grid``."""
    if rule == "topk":
        return None, *_topk_rows(ranks, grid)
    if rule == "sigma":
        cutoff = mu + grid * sigma
    elif rule == "threshold":
        cutoff = grid
    else:
        cutoff = np.array([classes_cutoff(cosine, int(n)) for n in grid])
    n_pairs, n_classes = _cut_rows(cosine, cutoff)
    if rule == "sigma" and not sigma > 0:  # as flag_pairs: no spread, nothing flagged
        n_pairs, n_classes = np.zeros_like(n_pairs), np.zeros_like(n_classes)
    return cutoff, n_pairs, n_classes


def calibration_table(
    cosine: np.ndarray, ranks: np.ndarray, *, chosen: Mapping[str, Any] | None = None
) -> pa.Table:
    """Rows of ``overlap_calibration``: what each rule would flag at each value of its parameter.

    One row per (rule, value), rules in ``RULES`` order, values ascending. Columns: ``rule``;
    ``parameter`` (k, threshold, top_k, classes); ``value``; ``cutoff`` (the cosine bound of the
    sigma, threshold and classes rules, null for topk); ``n_pairs`` and ``n_classes`` flagged;
    ``chosen`` (the run's own rule and value, given as ``chosen``: {"rule": ..., param: ...}).
    """
    chosen = dict(chosen or {})
    if chosen.get("rule") not in (None, *RULES):
        raise ValueError(f"unknown overlap rule {chosen['rule']!r}; use one of {', '.join(RULES)}")
    mu, sigma = off_diagonal_stats(np.asarray(cosine, dtype=np.float64))
    pieces = []
    for rule, grid in _grids(cosine, chosen).items():
        cutoff, n_pairs, n_classes = _rule_rows(rule, grid, cosine, ranks, mu, sigma)
        parameter = RULES[rule].parameter
        is_chosen = np.isclose(grid, float(chosen.get(parameter, np.nan)), rtol=0, atol=1e-9)
        pieces.append(
            {
                "rule": [rule] * len(grid),
                "parameter": [parameter] * len(grid),
                "value": grid,
                "cutoff": pa.array([None] * len(grid) if cutoff is None else cutoff, pa.float64()),
                "n_pairs": n_pairs.astype(np.int64),
                "n_classes": n_classes.astype(np.int64),
                "chosen": is_chosen & (chosen.get("rule") == rule),
            }
        )
    return pa.concat_tables(pa.table(piece, schema=OVERLAP_CALIBRATION) for piece in pieces)


def setting_flags(rule: str, value: float) -> str:
    """The command-line flags of one setting, e.g. ``--overlap-rule sigma --overlap-k 2.5``."""
    return RULES[rule].setting(value)


def suggest_setting(calibration: pa.Table, rule: str) -> str | None:
    """One line naming the strictest setting that flags something: the run's rule first.

    Strictest means fewest pairs (ties: the largest k or threshold, the smallest top_k or N).
    None when no row of the table flags a pair.
    """
    rows = calibration.to_pylist()
    for candidates in ([r for r in rows if r["rule"] == rule], rows):
        hits = [r for r in candidates if r["n_pairs"] > 0]
        if hits:
            best = min(hits, key=lambda r: (r["n_pairs"], RULES[r["rule"]].looser * r["value"]))
            return (
                f"{setting_flags(best['rule'], best['value'])} would flag {best['n_pairs']} "
                f"pair(s) over {best['n_classes']} classes"
            )
    return None
