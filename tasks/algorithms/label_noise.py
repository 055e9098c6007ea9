"""Likely label errors from the kNN graph, and per class pair counts of every kind of defect.

The classic kNN signal: an image whose nearest neighbours mostly carry another label is suspect.
Two classes that genuinely look alike (maple and oak) send each other many votes too, so a
vote for the other class is only suspect when it is surprising for the image's own class: the
test compares the votes for the majority class with that class's share among the neighbours of
the whole class (its neighbour profile, leave-one-out), a binomial tail. This is what confident
learning does with per-class thresholds: normalise by what the class normally looks like.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from storage.schemas.shared_columns import CONFUSION_DEFECTS, OVERLAP_DEFECTS
from tasks.algorithms.duplicates import leaked_test_labels
from tasks.algorithms.neighbours import Neighbours

# A suspect's neighbours must vote for its majority class with a binomial tail probability at
# most this, given the class profile. With k=10, two look-alike classes that split their votes
# 50/50 reach 0.5**10 ~ 1e-3 at most, so they never qualify; a flipped image reaches 1e-8.
DEFAULT_ALPHA = 1e-4
# "Mostly another label": fewer than this share of the neighbours carry the image's own label.
MAX_OWN_SHARE = 0.5
MAX_SCORE = 300.0  # -log10 of the smallest p-value reported (p = 0 in float64)
# The count columns of overlap_pairs and confusion_pairs, in ``defect_columns`` order.
OVERLAP_DEFECT_COLUMNS = tuple(field.name for field in OVERLAP_DEFECTS)
CONFUSION_DEFECT_COLUMNS = tuple(field.name for field in CONFUSION_DEFECTS)


def neighbour_labels(neighbours: Neighbours, labels: np.ndarray) -> np.ndarray:
    """(n, k) labels of each row's neighbours; -1 where a neighbour is missing."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.where(neighbours.positions >= 0, labels[np.maximum(neighbours.positions, 0)], -1)


def vote_profile(own: np.ndarray, votes: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) vote counts: [i, j] = neighbours labelled j of all rows labelled i."""
    valid = votes >= 0
    rows = np.broadcast_to(own[:, None], votes.shape)[valid]
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (rows, votes[valid]), 1)
    return counts


def majority_other(own: np.ndarray, votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's most voted label other than its own and that label's vote count (-1, 0: none);
    ties go to the label of the nearer neighbour."""
    other = (votes >= 0) & (votes != own[:, None])
    # counts[r, j] = how often votes[r, j] occurs in row r: k x k comparisons, k is small.
    counts = (votes[:, :, None] == votes[:, None, :]).sum(axis=2)
    counts = np.where(other, counts, 0)
    best = np.argmax(counts, axis=1)  # first maximum = nearest neighbour of that label
    top = counts[np.arange(len(votes)), best]
    return np.where(top > 0, votes[np.arange(len(votes)), best], -1), top


def label_suspects(
    neighbours: Neighbours,
    keys: pa.Table,
    class_names: Sequence[str],
    *,
    alpha: float = DEFAULT_ALPHA,
    max_own_share: float = MAX_OWN_SHARE,
) -> pa.Table:
    """Images whose neighbours mostly carry another label, more than their class explains.

    ``keys`` holds sample_id, split, label and class_name of every row, in the order of the
    neighbour positions. A row is a suspect when fewer than ``max_own_share`` of its neighbours
    share its label and its majority other label is surprising: binomial P(X >= votes) with the
    class's leave-one-out share of votes for that label is at most ``alpha``.

    Returns one row per suspect, most suspect first (then by sample_id), columns: sample_id,
    split, label, class_name (as given); score = -log10(p_value), capped at 300; p_value;
    own_share (neighbours with the given label); majority_label, majority_class, majority_share
    (the most voted other label, its share of the k neighbours); expected_share (that label's
    share among the neighbours of the rest of the class).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha is a probability and must lie in (0, 1), got {alpha}")
    own = keys.column("label").to_numpy().astype(np.int64)
    num_classes = len(class_names)
    if own.size and (own.min() < 0 or own.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}; pass the dataset's class_names")
    votes = neighbour_labels(neighbours, own)
    valid = (votes >= 0).sum(axis=1)
    own_votes = (votes == own[:, None]).sum(axis=1)
    majority, majority_votes = majority_other(own, votes)
    profile = vote_profile(own, votes, num_classes)
    has = majority >= 0
    picked = np.where(has, majority, 0)
    # Leave the row's own votes out of its class profile; +1 smoothing keeps unseen labels > 0.
    expected = (profile[own, picked] - majority_votes + 1) / (
        profile[own].sum(axis=1) - valid + num_classes
    )
    from scipy.stats import binom  # 1 s to import: only when suspects are scored

    p_value = np.where(has, binom.sf(majority_votes - 1, valid, expected), 1.0)
    own_share = own_votes / np.maximum(valid, 1)
    flagged = has & (own_share < max_own_share) & (p_value <= alpha)
    rows = np.flatnonzero(flagged)
    score = np.minimum(-np.log10(np.maximum(p_value[rows], 1e-300)), MAX_SCORE)
    ids = keys.column("sample_id").to_numpy()
    order = np.lexsort((ids[rows], -score))
    rows, score = rows[order], score[order]
    names = np.asarray(class_names, dtype=object)
    return pa.table(
        {
            "sample_id": pa.array(ids[rows], pa.int64()),
            "split": keys.column("split").take(pa.array(rows)),
            "label": pa.array(own[rows], pa.int32()),
            "class_name": keys.column("class_name").take(pa.array(rows)),
            "score": pa.array(score, pa.float64()),
            "p_value": pa.array(p_value[rows], pa.float64()),
            "own_share": pa.array(own_share[rows], pa.float32()),
            "majority_label": pa.array(majority[rows], pa.int32()),
            "majority_class": pa.array(names[majority[rows]].tolist(), pa.string()),
            "majority_share": pa.array(majority_votes[rows] / valid[rows], pa.float32()),
            "expected_share": pa.array(expected[rows], pa.float32()),
        }
    )


def _count_pairs(first: np.ndarray, second: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many (first[i], second[i]) equal each (a[j], b[j]): int64 aligned with a."""
    base = (
        int(max(first.max(initial=0), second.max(initial=0), a.max(initial=0), b.max(initial=0)))
        + 1
    )
    codes, counts = np.unique(first * base + second, return_counts=True)
    wanted = a * base + b
    at = np.clip(np.searchsorted(codes, wanted), 0, max(len(codes) - 1, 0))
    found = (codes[at] == wanted) if len(codes) else np.zeros(len(a), dtype=bool)
    return np.where(found, counts[at] if len(codes) else 0, 0).astype(np.int64)


def pair_counts(
    labels_a: np.ndarray, labels_b: np.ndarray, duplicates: pa.Table, suspects: pa.Table
) -> dict[str, np.ndarray]:
    """Per class pair (labels_a[i], labels_b[i]), how much of its overlap defects explain.

    ``duplicates`` is a near_duplicates table, ``suspects`` a label_suspects table (label and
    majority_label suffice). Returns int64 arrays aligned with the pairs:
    cross_class_duplicates (near-duplicate pairs with one copy in each class), suspects_a_to_b
    (suspects labelled a whose neighbours vote b), suspects_b_to_a, and leaked_test (test
    images of either class with a near-copy in train, under any label).
    """
    a = np.asarray(labels_a, dtype=np.int64)
    b = np.asarray(labels_b, dtype=np.int64)
    dup_a = duplicates.column("label_a").to_numpy().astype(np.int64)
    dup_b = duplicates.column("label_b").to_numpy().astype(np.int64)
    given = suspects.column("label").to_numpy().astype(np.int64)
    voted = suspects.column("majority_label").to_numpy().astype(np.int64)
    leaked = leaked_test_labels(duplicates)
    top = int(max(a.max(initial=0), b.max(initial=0), leaked.max(initial=0))) + 1
    leaked_per_class = np.bincount(leaked, minlength=top)
    # A duplicate pair stores its copies in sample_id order: count both orientations.
    cross = _count_pairs(dup_a, dup_b, a, b) + np.where(a != b, _count_pairs(dup_a, dup_b, b, a), 0)
    return {
        "cross_class_duplicates": cross,
        "suspects_a_to_b": _count_pairs(given, voted, a, b),
        "suspects_b_to_a": _count_pairs(given, voted, b, a),
        "leaked_test": (leaked_per_class[a] + leaked_per_class[b]).astype(np.int64),
    }


# The neighbours stage's tables ``pair_count_matrices`` reads, and the columns it needs of each
# (None: all), so that the stages that call it read them alike.
DEFECT_INPUTS: dict[str, list[str] | None] = {
    "near_duplicates": None,
    "label_suspects": ["label", "majority_label"],
}


def pair_count_matrices(
    num_classes: int,
    duplicates: pa.Table,
    suspects: pa.Table,
    classes: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """``pair_counts`` for every ordered pair of classes, as C x C int64 matrices:
    cross_class_duplicates[a, b] (symmetric), leaked_test[a, b] (test images of a or b leaked
    from train), suspects[a, b] (suspects labelled a whose neighbours vote b).

    ``classes``: keep only the rows and columns of these labels, in this order (a subset's
    original labels: the matrices are then indexed by the subset's own labels).
    """
    a, b = np.divmod(np.arange(num_classes * num_classes), num_classes)
    counts = pair_counts(a, b, duplicates, suspects)
    shape = (num_classes, num_classes)
    matrices = {
        "cross_class_duplicates": counts["cross_class_duplicates"].reshape(shape),
        "leaked_test": counts["leaked_test"].reshape(shape),
        "suspects": counts["suspects_a_to_b"].reshape(shape),
    }
    if classes is None:
        return matrices
    return {name: m[np.ix_(classes, classes)] for name, m in matrices.items()}


def defect_columns(
    matrices: Mapping[str, np.ndarray] | None,
    a: np.ndarray,
    b: np.ndarray,
    names: Sequence[str],
) -> dict[str, pa.Array]:
    """The four per-pair count columns of pairs (a[i], b[i]), named ``names`` (cross-class
    duplicates, leaked test images, suspects a -> b, suspects b -> a); null without matrices."""
    if matrices is None:
        return {name: pa.nulls(len(a), pa.int64()) for name in names}
    values = [
        matrices["cross_class_duplicates"][a, b],
        matrices["leaked_test"][a, b],
        matrices["suspects"][a, b],
        matrices["suspects"][b, a],
    ]
    return {name: pa.array(v, pa.int64()) for name, v in zip(names, values, strict=True)}
