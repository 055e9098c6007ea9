"""A run's figures beside the reference result: rows, values, verdicts and the printout."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.algorithms.confusion_pairs import confusion_pairs
from tasks.algorithms.reference import (
    REFERENCE,
    beside_reference_text,
    pairs_beside_reference,
    summary_beside_reference,
)
from tasks.evaluate import report_from_counts

# A classifier subset without mouse and shrew; 100 test images a class, as CIFAR-100's test set.
SUBSET = ["baby", "girl", "man", "maple_tree", "oak_tree", "woman"]


def _counts() -> np.ndarray:
    counts = np.diag([100] * 6)
    for true, pred, n in (
        ("maple_tree", "oak_tree", 25),
        ("girl", "woman", 30),
        ("man", "woman", 13),
    ):
        i, j = SUBSET.index(true), SUBSET.index(pred)
        counts[i, j], counts[i, i] = n, 100 - n
    return counts


def test_each_reference_pair_gets_the_runs_seed_columns() -> None:
    counts = _counts()
    confusion = confusion_pairs(counts, SUBSET, k=1, alpha=0.05, rule="sigma")
    report = report_from_counts(counts, SUBSET)
    table = pairs_beside_reference(confusion, report, [("oak_tree", "maple_tree")])
    rows = {(r["True"], r["Pred"]): r for r in table.to_pylist()}
    assert list(rows) == [(t, p) for t, p, _ in REFERENCE.pairs]
    maple = rows[("maple_tree", "oak_tree")]
    expected = next(
        r for r in confusion.to_pylist() if (r["True"], r["Pred"]) == ("maple_tree", "oak_tree")
    )
    assert {c: maple[c] for c in ("MisRate", "F1(True)", "F1(Pred)")} == {
        c: expected[c] for c in ("MisRate", "F1(True)", "F1(Pred)")
    }
    assert maple["MisRate"] == 0.25 and maple["close"] is True  # 0.24 +- 2 * 0.043
    assert maple["overlap_flagged"] is True  # the model-free pair, named either way round
    assert maple["confusion_flagged"] is True
    girl_woman = rows[("girl", "woman")]
    assert girl_woman["MisRate"] == 0.30 and girl_woman["close"] is False  # 0.16 + 0.073 < 0.30


def test_a_pair_never_confused_reads_zero_and_scores_from_the_report() -> None:
    counts = _counts()
    confusion = confusion_pairs(counts, SUBSET, k=1, alpha=0.05, rule="sigma")
    report = report_from_counts(counts, SUBSET)
    girl_baby = pairs_beside_reference(confusion, report, []).to_pylist()[2]
    assert (girl_baby["True"], girl_baby["Pred"], girl_baby["MisRate"]) == ("girl", "baby", 0.0)
    assert girl_baby["Recall(True)"] == pytest.approx(0.70)
    assert girl_baby["Precision(Pred)"] == pytest.approx(1.0)
    assert girl_baby["confusion_flagged"] is False and girl_baby["overlap_flagged"] is False
    assert girl_baby["spread"] == pytest.approx(2 * np.sqrt(0.14 * 0.86 / 100))
    assert girl_baby["close"] is False


def test_classes_outside_the_subset_or_without_a_classifier_are_missing_not_zero() -> None:
    counts = _counts()
    report = report_from_counts(counts, SUBSET)
    confusion = confusion_pairs(counts, SUBSET, k=1, alpha=0.05, rule="sigma")
    mouse = pairs_beside_reference(confusion, report, []).to_pylist()[4]
    assert mouse["MisRate"] is None and mouse["close"] is None
    no_classifier = pairs_beside_reference(None, None, []).to_pylist()
    assert all(r["MisRate"] is None and r["F1(Pred)"] is None for r in no_classifier)


def test_summary_rows_and_their_spread() -> None:
    rows = summary_beside_reference(classes=54, accuracy=0.79, test_images=5400).to_pylist()
    assert [r["item"] for r in rows] == ["classes", "accuracy", "test images"]
    assert [r["close"] for r in rows] == [True, True, True]
    assert rows[1]["spread"] == pytest.approx(2 * np.sqrt(0.79 * 0.21 / 5400))
    far = summary_beside_reference(classes=12, accuracy=0.95, test_images=None).to_pylist()
    assert [r["close"] for r in far] == [False, None, None]


def test_printout_has_every_row_and_a_verdict() -> None:
    counts = _counts()
    summary = summary_beside_reference(classes=6, accuracy=0.86, test_images=600)
    pairs = pairs_beside_reference(
        confusion_pairs(counts, SUBSET, k=1, alpha=0.05, rule="sigma"),
        report_from_counts(counts, SUBSET),
        [],
    )
    text = beside_reference_text(summary, pairs)
    lines = text.splitlines()
    assert lines[0].split() == ["item", "reference", "run", "spread", "close"]
    assert lines[1].split() == ["classes", "54", "6", "0.0000", "no"]
    assert any(line.startswith("maple_tree") and "0.2400" in line for line in lines)
    assert (
        lines[-1] == "2 of 8 figures within their spread of the reference (1 missing from this run)"
    )
