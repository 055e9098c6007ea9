"""Confusion pairs: the sigma rule on a hand-made matrix, Wilson, binomial, BH, the task."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from prefect.logging import disable_run_logger
from scipy import stats

from tasks import classifier, confusion, evaluate
from tasks.algorithms.confusion_pairs import (
    base_rate,
    binomial_p_values,
    confusion_pairs,
    q_values,
    sigma_threshold,
    wilson_interval,
)
from tests.support.builders import (
    clf_clusters,
    clf_config,
    clf_embeddings_stage,
    clf_similarity_stage,
    clf_single_thread,
    clf_splits,
    clf_subset_stage,
    dataset_stage,
)

SEED_COLUMNS = [
    "True",
    "Pred",
    "MisRate",
    "Precision(Pred)",
    "Recall(True)",
    "F1(True)",
    "F1(Pred)",
]
# Rows: true class, columns: predicted. 10 samples per class.
HAND = np.array([[6, 4, 0, 0], [1, 9, 0, 0], [0, 0, 10, 0], [0, 1, 1, 8]])
NAMES = ["maple", "oak", "bus", "tram"]


def test_sigma_rule_on_hand_made_matrix() -> None:
    # The 12 off-diagonal rates are 0.4, 0.1 three times and 0 eight times.
    mu, sigma = 0.7 / 12, np.sqrt(0.19 / 12 - (0.7 / 12) ** 2)  # population sigma: 0.1115
    for k, expected in ((0.0, {(0, 1), (1, 0), (3, 1), (3, 2)}), (1.0, {(0, 1)}), (4.0, set())):
        assert sigma_threshold(HAND, k) == pytest.approx(mu + k * sigma)
        pairs = confusion_pairs(HAND, NAMES, k=k, alpha=0.05, rule="sigma").to_pylist()
        assert {(r["true_label"], r["pred_label"]) for r in pairs if r["flagged"]} == expected


def test_pair_table_columns_and_values() -> None:
    table = confusion_pairs(
        HAND, NAMES, k=1.0, alpha=0.05, rule="sigma", coarse_names=["tree", "tree", "vehicle", None]
    )
    assert table.column_names[:7] == SEED_COLUMNS
    rows = table.to_pylist()
    assert len(rows) == 4  # only pairs with count > 0
    assert [r["MisRate"] for r in rows] == sorted((r["MisRate"] for r in rows), reverse=True)
    top = rows[0]
    assert (top["True"], top["Pred"], top["count"], top["support"]) == ("maple", "oak", 4, 10)
    assert top["MisRate"] == pytest.approx(0.4)
    assert top["Recall(True)"] == pytest.approx(0.6)
    assert top["Precision(Pred)"] == pytest.approx(9 / 14)
    assert top["F1(True)"] == pytest.approx(2 * 0.6 * 6 / 7 / (0.6 + 6 / 7))
    assert top["same_superclass"] is True
    assert {r["same_superclass"] for r in rows if r["True"] == "tram"} == {None}
    assert top["centroid_cosine"] is None


def test_wilson_matches_known_values_and_scipy() -> None:
    low, high = wilson_interval(np.array([5, 0, 18]), np.array([10, 10, 100]))
    assert low[0] == pytest.approx(0.236593, abs=1e-6) and high[0] == pytest.approx(
        0.763407, abs=1e-6
    )
    assert low[1] == 0.0 and high[1] == pytest.approx(0.277533, abs=1e-6)
    for count, n in ((18, 100), (1, 3), (7, 7)):
        ci = stats.binomtest(count, n).proportion_ci(method="wilson")
        assert wilson_interval(count, n) == pytest.approx((ci.low, ci.high))
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_binomial_p_values_and_base_rate() -> None:
    rate = base_rate(HAND)
    assert rate == pytest.approx(7 / (40 * 3))
    p = binomial_p_values(HAND, rate)
    expected = stats.binomtest(4, 10, rate, alternative="greater").pvalue
    assert p[0, 1] == pytest.approx(expected)
    assert p[0, 2] == 1.0


def test_benjamini_hochberg_known_values() -> None:
    q = q_values(np.array([0.01, 0.04, 0.03, 0.005]))
    assert q == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_q_values_count_every_candidate_cell() -> None:
    table = confusion_pairs(HAND, NAMES, k=1.0, alpha=0.05, rule="binomial")
    p = binomial_p_values(HAND, base_rate(HAND))[~np.eye(4, dtype=bool)]
    q = stats.false_discovery_control(p)  # 12 hypotheses, zero-count cells included
    assert max(table.column("q_value").to_pylist()) <= 1
    assert sorted(table.column("q_value").to_pylist()) == pytest.approx(sorted(q[p < 1]))
    assert table.column("flagged").to_pylist() == table.column("flagged_binomial").to_pylist()


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown confusion rule"):
        confusion_pairs(HAND, NAMES, k=1.0, alpha=0.05, rule="vote")


def test_pipeline_flags_planted_pair(tmp_path) -> None:
    names = ["maple", "oak", "bus", "tram", "lion"]
    x, labels = clf_clusters(5, 100, planted=((0, 1),), seed=1)
    coarse = ["tree", "tree", "vehicle", "vehicle", "animal"]
    embeddings = clf_embeddings_stage(tmp_path, x, labels, names)
    subset = clf_subset_stage(tmp_path, labels, clf_splits(labels), names, coarse)
    cosine = np.add.outer(np.arange(5), np.arange(5)) / 10 + np.eye(5)  # a value per pair
    similarity = clf_similarity_stage(tmp_path, cosine, names)
    images = dataset_stage(tmp_path, names)
    config = clf_config(tmp_path, confusion_rule="binomial")
    with disable_run_logger(), clf_single_thread():
        model = classifier.classifier_task.fn(embeddings, subset, config.params.classifier)
        evaluation = evaluate.evaluate_task.fn(model, embeddings, subset, config.params.common)
        manifest = confusion.confusion_task.fn(
            images, evaluation, subset, similarity, config.params.confusion
        )
        no_similarity = confusion.confusion_task.fn(
            images, evaluation, subset, None, config.params.confusion
        )
    pairs = pl.read_parquet(manifest.path("confusion_pairs.parquet"))
    flagged = pairs.filter(pl.col("flagged"))
    assert set(zip(flagged["True"], flagged["Pred"], strict=True)) <= {
        ("maple", "oak"),
        ("oak", "maple"),
    }
    assert flagged.height >= 1 and flagged["same_superclass"].all()
    assert flagged["centroid_cosine"].to_list() == pytest.approx([cosine[0, 1]] * flagged.height)
    assert manifest.info["flagged"] == flagged.height
    assert no_similarity.key != manifest.key
    other = pl.read_parquet(no_similarity.path("confusion_pairs.parquet"))
    assert other["centroid_cosine"].null_count() == other.height
