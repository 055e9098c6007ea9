"""The ``classes`` overlap rule and the calibration grid of every rule."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.algorithms.calibration import (
    apply_rule,
    calibration_table,
    classes_cutoff,
    setting_flags,
    suggest_setting,
)
from tasks.algorithms.centroids import neighbour_ranks
from tests.support.builders import FIVE_CLASS_COSINE as COSINE


def _classes(cosine: np.ndarray, n: int) -> list[list[int]]:
    return apply_rule(cosine, neighbour_ranks(cosine), rule="classes", classes=n).pairs.tolist()


def _random_cosine(seed: int, num_classes: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, 6))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return centres @ centres.T


def test_classes_rule_flags_pairs_in_order_until_n_classes_are_covered() -> None:
    assert _classes(COSINE, 2) == [[0, 1]]
    assert _classes(COSINE, 4) == [[0, 1], [2, 3]]
    # The third pair (1-2) covers no new class; 3-4 is the first to bring class 4.
    assert _classes(COSINE, 5) == [[0, 1], [2, 3], [1, 2], [3, 4]]


def test_classes_rule_overshoots_by_one_when_the_last_pair_brings_two_classes() -> None:
    # Pairs 0-1 then 2-3: asking for 3 classes flags both pairs, 4 classes.
    assert _classes(COSINE, 3) == [[0, 1], [2, 3]]
    assert classes_cutoff(COSINE, 3) == pytest.approx(0.80)


def test_classes_rule_flags_every_pair_tied_at_the_cut() -> None:
    tied = COSINE.copy()
    tied[3, 4] = tied[4, 3] = 0.80  # 3-4 now ties with 2-3 at the cut
    assert _classes(tied, 3) == [[0, 1], [2, 3], [3, 4]]


@pytest.mark.parametrize("n", [0, 1, 6])
def test_classes_rule_refuses_a_count_it_cannot_reach(n: int) -> None:
    with pytest.raises(ValueError, match=r"--overlap-classes must lie in 2\.\.5"):
        classes_cutoff(COSINE, n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_calibration_row_is_what_the_rule_flags(seed: int) -> None:
    cosine = _random_cosine(seed)
    ranks = neighbour_ranks(cosine)
    table = calibration_table(cosine, ranks, chosen={"rule": "sigma", "k": 1.3})
    assert set(table.column("rule").to_pylist()) == {"sigma", "threshold", "topk", "classes"}
    for row in table.to_pylist():
        value = int(row["value"]) if row["rule"] in ("topk", "classes") else row["value"]
        flagged = apply_rule(cosine, ranks, rule=row["rule"], **{row["parameter"]: value})
        covered = np.unique(flagged.pairs)
        assert (row["n_pairs"], row["n_classes"]) == (len(flagged.pairs), len(covered)), row
        if row["rule"] != "topk":
            assert row["cutoff"] == pytest.approx(flagged.cutoff)
        if row["rule"] == "classes":
            assert row["n_classes"] >= row["value"]


def test_the_chosen_setting_is_one_marked_row_even_off_the_grid() -> None:
    ranks = neighbour_ranks(COSINE)
    for chosen in ({"rule": "sigma", "k": 1.3}, {"rule": "classes", "classes": 4}):
        table = calibration_table(COSINE, ranks, chosen=chosen)
        rows = [r for r in table.to_pylist() if r["chosen"]]
        assert len(rows) == 1
        parameter = rows[0]["parameter"]
        assert (rows[0]["rule"], rows[0]["value"]) == (chosen["rule"], chosen[parameter])
        applied = apply_rule(COSINE, ranks, **chosen)
        assert rows[0]["n_pairs"] == len(applied.pairs)


def test_calibration_counts_fall_as_the_rule_tightens() -> None:
    cosine = _random_cosine(3, num_classes=30)
    table = calibration_table(cosine, neighbour_ranks(cosine)).to_pylist()
    for rule, sign in (("sigma", -1), ("threshold", -1), ("topk", 1), ("classes", 1)):
        counts = [r["n_pairs"] for r in table if r["rule"] == rule]
        assert counts == sorted(counts, reverse=sign < 0), rule
    classes = [r for r in table if r["rule"] == "classes"]
    assert [r["value"] for r in classes] == list(range(2, 31))


def test_sigma_rows_flag_nothing_when_every_pair_is_equally_similar() -> None:
    flat = np.full((4, 4), 0.5)
    np.fill_diagonal(flat, 1)
    table = calibration_table(flat, neighbour_ranks(flat), chosen={"rule": "sigma", "k": 3})
    sigma = [r for r in table.to_pylist() if r["rule"] == "sigma"]
    assert all(r["n_pairs"] == 0 for r in sigma)
    line = suggest_setting(table, "sigma")
    # No k flags anything, so the suggestion falls back to another rule that does.
    assert line is not None and "--overlap-rule sigma" not in line and "would flag" in line


def test_suggestion_is_the_strictest_setting_of_the_run_rule_that_flags_something() -> None:
    table = calibration_table(COSINE, neighbour_ranks(COSINE), chosen={"rule": "sigma", "k": 3})
    assert suggest_setting(table, "sigma") == (
        "--overlap-rule sigma --overlap-k 2 would flag 1 pair(s) over 2 classes"
    )
    assert suggest_setting(table, "classes") == (
        "--overlap-rule classes --overlap-classes 2 would flag 1 pair(s) over 2 classes"
    )


def test_setting_flags_print_integers_for_counts() -> None:
    assert setting_flags("topk", 2.0) == "--overlap-rule topk --overlap-top-k 2"
    assert setting_flags("threshold", 0.625) == "--overlap-rule threshold --overlap-threshold 0.625"


def test_unknown_chosen_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown overlap rule 'knn'"):
        calibration_table(COSINE, neighbour_ranks(COSINE), chosen={"rule": "knn"})


def test_calibration_figure_marks_the_run_setting_in_its_rule_panel() -> None:
    from tasks.reporting.figures_calibration import calibration_figure

    cosine = _random_cosine(4, num_classes=20)
    table = calibration_table(
        cosine, neighbour_ranks(cosine), chosen={"rule": "classes", "classes": 8}
    )
    figure = calibration_figure(table, 20)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["sigma", "threshold", "topk", "classes"]
    marked = [[line for line in ax.lines if line.get_marker() == "D"] for ax in figure.axes]
    assert [len(m) for m in marked] == [0, 0, 0, 1]
    (chosen,) = [r for r in table.to_pylist() if r["chosen"]]
    assert marked[3][0].get_xydata().tolist() == [[8.0, chosen["n_classes"]]]
    # two panels a row: report.html shows it whole, without scrolling sideways
    from tasks.reporting.figures import png_bytes
    from tasks.reporting.report_render import PAGE_WIDTH_PX, png_width

    assert png_width(png_bytes(figure)) <= PAGE_WIDTH_PX
