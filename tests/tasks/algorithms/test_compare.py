"""Comparing runs: pairs against runs, Jaccard of flagged sets, Spearman of cosines, consensus."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tasks.algorithms.centroids import neighbour_ranks, similarity_table
from tasks.algorithms.compare import (
    RunPairs,
    agreement_table,
    by_run,
    compare_pairs,
    consensus_pairs,
    consensus_table,
)
from tasks.algorithms.confusion_pairs import confusion_pairs
from tasks.algorithms.overlap_rules import flag_pairs, overlap_pairs_table
from tests.support.builders import FIVE_CLASS_COSINE as COSINE

NAMES = ["girl", "woman", "oak", "maple", "bus"]


def _run(name: str, cosine: np.ndarray, names: list[str] = NAMES, **rule: object) -> RunPairs:
    """A run's tables as its stages write them: class_similarity and overlap_pairs."""
    matrix = cosine.copy()
    np.fill_diagonal(matrix, np.nan)
    flagged = flag_pairs(matrix, neighbour_ranks(cosine), **(rule or {"rule": "topk"}))
    return RunPairs(
        name,
        similarity_table(cosine.astype(np.float32), names),
        overlap_pairs_table(flagged, matrix, neighbour_ranks(cosine), names),
    )


def test_one_row_per_pair_and_run_with_names_in_order() -> None:
    table = compare_pairs([_run("dino", COSINE), _run("dinov2", COSINE**2)]).to_pylist()
    assert len(table) == 10 * 2
    assert all(row["class_a"] < row["class_b"] for row in table)
    assert [row["run"] for row in table[:4]] == ["dino", "dinov2", "dino", "dinov2"]
    girl_woman = [r for r in table if (r["class_a"], r["class_b"]) == ("girl", "woman")]
    assert [r["cosine"] for r in girl_woman] == pytest.approx([0.95, 0.95**2])
    assert [(r["pair_rank"], r["rank"], r["flagged"]) for r in girl_woman] == [(1, 1, True)] * 2
    bus_maple = next(r for r in table if (r["class_a"], r["class_b"]) == ("bus", "maple"))
    assert (bus_maple["pair_rank"], bus_maple["rank"], bus_maple["flagged"]) == (4, 1, False)
    assert all(row["mis_rate"] is None for row in table)  # no classifier ran


def test_mis_rate_is_the_larger_direction_and_zero_only_within_the_classifier_classes() -> None:
    subset = ["girl", "woman", "oak"]
    counts = np.array([[7, 3, 0], [1, 9, 0], [0, 0, 10]])  # girl->woman 0.3, woman->girl 0.1
    confusion = confusion_pairs(counts, subset, k=3, alpha=0.05, rule="sigma")
    run = _run("dino", COSINE)
    with_classifier = RunPairs(run.name, run.similarity, run.flagged, confusion, subset)
    table = compare_pairs([with_classifier, _run("other", COSINE)]).to_pylist()
    rate = {(r["class_a"], r["class_b"]): r["mis_rate"] for r in table if r["run"] == "dino"}
    assert rate[("girl", "woman")] == pytest.approx(0.3)
    assert rate[("girl", "oak")] == 0.0 and rate[("oak", "woman")] == 0.0
    assert rate[("bus", "girl")] is None  # bus was not in the classifier's classes


def test_agreement_of_identical_and_of_reversed_runs() -> None:
    same = agreement_table(compare_pairs([_run("a", COSINE), _run("b", COSINE)])).to_pylist()
    assert same == [
        {
            "run_a": "a",
            "run_b": "b",
            "pairs": 10,
            "flagged_a": 2,
            "flagged_b": 2,
            "flagged_both": 2,
            "jaccard": 1.0,
            "spearman": pytest.approx(1.0),
        }
    ]
    reversed_cosine = 1 - COSINE
    np.fill_diagonal(reversed_cosine, 1)
    runs = [_run("a", COSINE), _run("b", reversed_cosine, rule="threshold", threshold=1.01)]
    (row,) = agreement_table(compare_pairs(runs)).to_pylist()
    assert row["spearman"] == pytest.approx(-1.0)
    assert (row["flagged_b"], row["jaccard"]) == (0, 0.0)


def test_jaccard_counts_both_over_either() -> None:
    runs = [
        _run("a", COSINE, rule="threshold", threshold=0.5),  # girl-woman, oak-maple, woman-oak
        _run("b", COSINE, rule="threshold", threshold=0.8),  # girl-woman, oak-maple
        _run("c", COSINE, rule="threshold", threshold=0.9),  # girl-woman
    ]
    rows = agreement_table(compare_pairs(runs)).to_pylist()
    assert [(r["run_a"], r["run_b"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert [r["jaccard"] for r in rows] == pytest.approx([2 / 3, 1 / 3, 1 / 2])


def test_consensus_is_what_every_run_flags_most_agreed_first() -> None:
    runs = [
        _run("a", COSINE, rule="threshold", threshold=0.5),
        _run("b", COSINE, rule="threshold", threshold=0.8),
    ]
    consensus = consensus_table(compare_pairs(runs))
    rows = consensus.to_pylist()
    assert [(r["class_a"], r["class_b"], r["runs_flagged"]) for r in rows] == [
        ("girl", "woman", 2),
        ("maple", "oak", 2),
        ("oak", "woman", 1),
    ]
    assert consensus_pairs(consensus) == [("girl", "woman"), ("maple", "oak")]
    wide = by_run(compare_pairs(runs), consensus)
    assert wide.column_names[:4] == ["class_a", "class_b", "cosine[a]", "cosine[b]"]
    assert wide.column("flagged[b]").to_pylist() == [True, True, False]
    # compare.md shows the headers as written: cosine[a], not cosine\[a\]
    from tasks.reporting.report_render import arrow_table, to_markdown

    header = to_markdown("t", [arrow_table(wide, wide.column_names[:4])]).splitlines()[2]
    assert header == "| class_a | class_b | cosine[a] | cosine[b] |"


def test_runs_over_different_classes_agree_on_the_pairs_they_share() -> None:
    other = ["girl", "woman", "oak", "maple", "bicycle"]
    runs = [_run("a", COSINE), _run("b", COSINE, names=other)]
    table = compare_pairs(runs)
    assert table.num_rows == 20
    (row,) = agreement_table(table).to_pylist()
    assert row["pairs"] == 6  # the pairs among the four shared classes
    assert row["spearman"] == pytest.approx(1.0)


def test_bad_calls_are_refused() -> None:
    with pytest.raises(ValueError, match="at least two runs"):
        compare_pairs([_run("a", COSINE)])
    with pytest.raises(ValueError, match="run names must differ"):
        compare_pairs([_run("a", COSINE), _run("a", COSINE)])


def test_tables_are_plain_arrow() -> None:
    table = compare_pairs([_run("a", COSINE), _run("b", COSINE)])
    assert isinstance(table, pa.Table)
    assert table.column_names == [
        "class_a",
        "class_b",
        "run",
        "cosine",
        "pair_rank",
        "rank",
        "flagged",
        "mis_rate",
    ]
