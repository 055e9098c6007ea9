"""Rules that flag overlapping class pairs, and the tables that describe what they flagged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tasks.algorithms.label_noise import OVERLAP_DEFECT_COLUMNS, defect_columns
from tasks.algorithms.overlap_rule import RULES as ALL_RULES

# the rules flag_pairs computes itself; the others are one of these at a cutoff (apply_rule)
RULES = tuple(name for name, rule in ALL_RULES.items() if rule.via is None)


@dataclass(frozen=True)
class Flagged:
    """Pairs a rule flagged (a < b, most similar first) and the statistics it used."""

    pairs: np.ndarray  # (m, 2) int64
    mu: float
    sigma: float
    cutoff: float | None  # cosine bound of the sigma and threshold rules; None for topk


def pair_columns(a: np.ndarray, b: np.ndarray, names: Sequence[str]) -> dict[str, pa.Array]:
    """The two classes of each pair (label_a, class_a, label_b, class_b), as pair tables start."""
    name_array = np.asarray(names, dtype=object)
    return {
        "label_a": pa.array(a.astype(np.int32)),
        "class_a": pa.array(name_array[a].tolist(), pa.string()),
        "label_b": pa.array(b.astype(np.int32)),
        "class_b": pa.array(name_array[b].tolist(), pa.string()),
    }


def similarity_matrices(table: pa.Table, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine (NaN diagonal) and neighbour-rank (0 diagonal) matrices from ``class_similarity``."""
    a = table.column("label_a").to_numpy()
    b = table.column("label_b").to_numpy()
    cosine = np.full((num_classes, num_classes), np.nan)
    ranks = np.zeros((num_classes, num_classes), dtype=np.int32)
    cosine[a, b] = table.column("cosine").to_numpy()
    ranks[a, b] = table.column("rank").to_numpy()
    return cosine, ranks


def off_diagonal_stats(cosine: np.ndarray) -> tuple[float, float]:
    """Mean and population standard deviation of the cosines of all unordered pairs."""
    values = cosine[np.triu_indices(len(cosine), k=1)]
    if values.size == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std())


def flag_pairs(
    cosine: np.ndarray,
    ranks: np.ndarray,
    *,
    rule: str = "sigma",
    k: float = 3.0,
    threshold: float = 0.6,
    top_k: int = 1,
) -> Flagged:
    """Flag unordered pairs by ``rule``.

    sigma: cosine >= mu + k*sigma over the off-diagonal upper triangle (nothing when sigma is 0);
    threshold: cosine >= threshold; topk: mutual top-k, each class among the other's ``top_k``
    nearest classes (one-sided top-k would flag every class, which is not a focused list).
    """
    if rule not in RULES:
        raise ValueError(f"unknown overlap rule {rule!r}; use one of {', '.join(RULES)}")
    mu, sigma = off_diagonal_stats(cosine)
    a, b = np.triu_indices(len(cosine), k=1)
    values = cosine[a, b]
    cutoff: float | None = None
    if rule == "sigma":
        cutoff = mu + k * sigma
        keep = values >= cutoff if sigma > 0 else np.zeros(values.size, dtype=bool)
    elif rule == "threshold":
        cutoff = threshold
        keep = values >= threshold
    else:
        keep = (ranks[a, b] <= top_k) & (ranks[b, a] <= top_k)
    a, b, values = a[keep], b[keep], values[keep]
    order = np.lexsort((b, a, -values))
    return Flagged(np.stack([a[order], b[order]], axis=1).astype(np.int64), mu, sigma, cutoff)


def overlap_groups(pairs: np.ndarray, num_classes: int) -> np.ndarray:
    """Group id per class (-1 when unflagged): connected components of the flagged pairs.

    Groups are numbered 0, 1, ... in order of their smallest label.
    """
    from scipy.sparse import coo_matrix  # scipy.sparse: imported when groups are computed
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix(
        (np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(num_classes, num_classes)
    )
    _, component = connected_components(graph, directed=False)
    flagged = np.zeros(num_classes, dtype=bool)
    flagged[pairs.ravel()] = True
    groups = np.full(num_classes, -1, dtype=np.int32)
    for number, comp in enumerate(dict.fromkeys(component[flagged].tolist())):
        groups[flagged & (component == comp)] = number
    return groups


def _superclass(coarse: Sequence[int] | None, a: np.ndarray, b: np.ndarray) -> pa.Array:
    """True when both classes share a superclass; null when the dataset has none."""
    if coarse is None:
        return pa.nulls(len(a), pa.bool_())
    coarse_array = np.asarray(coarse)
    return pa.array(coarse_array[a] == coarse_array[b], pa.bool_())


def overlap_pairs_table(
    flagged: Flagged,
    cosine: np.ndarray,
    ranks: np.ndarray,
    names: Sequence[str],
    coarse_labels: Sequence[int] | None = None,
    defects: Mapping[str, np.ndarray] | None = None,
) -> pa.Table:
    """``overlap_pairs``: a row per flagged pair, in the order of ``flagged.pairs``; label_a,
    class_a, label_b, class_b, cosine, z, rank, rank_a, rank_b, same_superclass, then the
    neighbours stage's counts from ``defects`` (``label_noise.pair_count_matrices``; null
    without): cross_class_duplicates, leaked_test, suspects_a_to_b, suspects_b_to_a."""
    a, b = flagged.pairs[:, 0], flagged.pairs[:, 1]
    values = cosine[a, b]
    z = (values - flagged.mu) / flagged.sigma if flagged.sigma > 0 else np.zeros(len(a))
    return pa.table(
        {
            **pair_columns(a, b, names),
            "cosine": pa.array(values.astype(np.float32)),
            "z": pa.array(np.asarray(z, dtype=np.float64)),
            "rank": pa.array(np.minimum(ranks[a, b], ranks[b, a]).astype(np.int32)),
            "rank_a": pa.array(ranks[a, b].astype(np.int32)),
            "rank_b": pa.array(ranks[b, a].astype(np.int32)),
            "same_superclass": _superclass(coarse_labels, a, b),
            # the bootstrap's columns, filled in by bootstrap.with_stability when it runs
            **{c: pa.nulls(len(a), pa.float64()) for c in ("ci_low", "ci_high", "flag_rate")},
            **defect_columns(defects, a, b, OVERLAP_DEFECT_COLUMNS),
        }
    )


def overlap_classes_table(pairs: np.ndarray, cosine: np.ndarray, names: Sequence[str]) -> pa.Table:
    """``overlap_classes``: a row per flagged class; label, class_name, partners and
    partner_labels (nearest first), group, group_size, max_cosine."""
    groups = overlap_groups(pairs, len(names))
    sizes = np.bincount(groups[groups >= 0], minlength=1)
    rows: dict[str, list] = {c: [] for c in ("label", "class_name", "partners", "partner_labels")}
    rows |= {"group": [], "group_size": [], "max_cosine": []}
    for label in np.flatnonzero(groups >= 0):
        partners = np.concatenate([pairs[pairs[:, 0] == label, 1], pairs[pairs[:, 1] == label, 0]])
        partners = partners[np.lexsort((partners, -cosine[label, partners]))]
        rows["label"].append(int(label))
        rows["class_name"].append(names[label])
        rows["partners"].append([names[p] for p in partners])
        rows["partner_labels"].append(partners.astype(int).tolist())
        rows["group"].append(int(groups[label]))
        rows["group_size"].append(int(sizes[groups[label]]))
        rows["max_cosine"].append(float(cosine[label, partners].max()))
    order = np.lexsort((rows["label"], rows["group"])) if rows["label"] else []
    table = pa.table(
        {
            "label": pa.array(rows["label"], pa.int32()),
            "class_name": pa.array(rows["class_name"], pa.string()),
            "partners": pa.array(rows["partners"], pa.list_(pa.string())),
            "partner_labels": pa.array(rows["partner_labels"], pa.list_(pa.int32())),
            "group": pa.array(rows["group"], pa.int32()),
            "group_size": pa.array(rows["group_size"], pa.int32()),
            "max_cosine": pa.array(rows["max_cosine"], pa.float32()),
        }
    )
    return table.take(pa.array(order, pa.int64()))


def planted_check(
    pairs: np.ndarray, names: Sequence[str], planted: Sequence[Sequence[str]]
) -> dict:
    """Which planted pairs a rule found, missed, and which flagged pairs were not planted."""
    flagged = {frozenset((names[a], names[b])) for a, b in pairs}
    truth = {frozenset(pair) for pair in planted}
    return {
        "found": _sorted_pairs(flagged & truth),
        "missed": _sorted_pairs(truth - flagged),
        "extra": _sorted_pairs(flagged - truth),
    }


def _sorted_pairs(pairs: set[frozenset[str]]) -> list[list[str]]:
    """Pairs as sorted lists of names, in sorted order (JSON-able, stable)."""
    return sorted(sorted(pair) for pair in pairs)
