"""Overlap rules, groups, pair samples and the find-overlaps task."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from prefect import flow
from prefect.logging import disable_run_logger

from flows.config import RunConfig
from storage.manifest import StageManifest
from storage.schemas.overlap import OVERLAP_CLASSES, OVERLAP_PAIRS, PAIR_SAMPLES
from storage.tables import read_parquet
from tasks.algorithms.centroids import neighbour_ranks
from tasks.algorithms.overlap_rules import (
    flag_pairs,
    overlap_classes_table,
    overlap_groups,
    overlap_pairs_table,
)
from tasks.algorithms.pair_samples import top_pair_samples
from tasks.class_similarity import class_similarity_task
from tasks.overlap import _log_summary, overlap_task, rule_params
from tests.support.builders import (
    FIVE_CLASS_COSINE as COSINE,
)
from tests.support.builders import (
    dataset_stage,
    ovl_clusters,
    ovl_config,
    ovl_embeddings_stage,
    ovl_embeddings_table,
)

NAMES = ["girl", "woman", "oak", "maple", "bus"]


def _flag(**rule: object) -> list[list[int]]:
    return flag_pairs(COSINE, neighbour_ranks(COSINE), **rule).pairs.tolist()


def test_sigma_rule_uses_off_diagonal_mean_and_population_sigma() -> None:
    values = COSINE[np.triu_indices(5, 1)]
    flagged = flag_pairs(COSINE, neighbour_ranks(COSINE), rule="sigma", k=1.0)
    assert flagged.mu == pytest.approx(values.mean())
    assert flagged.sigma == pytest.approx(values.std(ddof=0))
    assert flagged.cutoff == pytest.approx(values.mean() + values.std())
    assert flagged.pairs.tolist() == [[0, 1], [2, 3]]  # most similar first
    assert _flag(rule="sigma", k=2.0) == [[0, 1]]
    assert _flag(rule="sigma", k=3.0) == []


def test_sigma_rule_flags_nothing_when_all_pairs_are_equal() -> None:
    flat = np.full((4, 4), 0.5)
    np.fill_diagonal(flat, 1)
    assert flag_pairs(flat, neighbour_ranks(flat), rule="sigma", k=0).pairs.size == 0


def test_threshold_rule_is_inclusive() -> None:
    assert _flag(rule="threshold", threshold=0.8) == [[0, 1], [2, 3]]
    assert _flag(rule="threshold", threshold=0.5) == [[0, 1], [2, 3], [1, 2]]


def test_topk_rule_is_mutual() -> None:
    # Nearest classes: 0->1, 1->0, 2->3, 3->2, 4->3; 4-3 is one-sided, so not flagged.
    assert _flag(rule="topk", top_k=1) == [[0, 1], [2, 3]]
    assert _flag(rule="topk", top_k=2) == [[0, 1], [2, 3], [1, 2], [3, 4]]


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown overlap rule 'knn'"):
        _flag(rule="knn")


def test_groups_are_connected_components() -> None:
    pairs = np.array([[5, 6], [0, 1], [1, 2]])
    groups = overlap_groups(pairs, 8)
    assert groups.tolist() == [0, 0, 0, -1, -1, 1, 1, -1]


def test_pair_and_class_tables() -> None:
    ranks = neighbour_ranks(COSINE)
    flagged = flag_pairs(COSINE, ranks, rule="threshold", threshold=0.5)
    pairs = overlap_pairs_table(flagged, COSINE, ranks, NAMES, coarse_labels=[0, 0, 1, 1, 2])
    assert pairs.column("same_superclass").to_pylist() == [True, True, False]
    assert pairs.column("rank_a").to_pylist() == [1, 1, 2]  # woman is girl's nearest; oak 2nd
    assert pairs.column("rank_b").to_pylist() == [1, 1, 2]
    no_coarse = overlap_pairs_table(flagged, COSINE, ranks, NAMES)
    assert no_coarse.column("same_superclass").null_count == 3
    classes = overlap_classes_table(flagged.pairs, COSINE, NAMES).to_pydict()
    assert classes["class_name"] == ["girl", "woman", "oak", "maple"]
    assert classes["partners"][1] == ["girl", "oak"]  # nearest partner first
    assert classes["group"] == [0, 0, 0, 0] and classes["group_size"] == [4] * 4
    assert classes["max_cosine"] == pytest.approx([0.95, 0.95, 0.8, 0.8])


def test_pair_samples_rank_images_by_closeness_to_the_other_class() -> None:
    centroids = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    angles = np.array([0.1, 0.7, 0.4, 1.4, 0.9, 1.2, 3.1])  # classes 0 0 0 1 1 1 2
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    table = ovl_embeddings_table(x, labels, ["a", "b", "c"])
    pairs = np.array([[0, 1]])
    whole = top_pair_samples([table], centroids, pairs, ["a", "b", "c"], 2)
    shards = [table.slice(i, 2) for i in range(0, 7, 2)]
    assert top_pair_samples(shards, centroids, pairs, ["a", "b", "c"], 2).equals(whole)
    rows = whole.to_pydict()
    assert rows["sample_id"] == [1, 2, 4, 5]  # class a nearest b first, then class b nearest a
    assert rows["rank"] == [1, 2, 1, 2]
    assert rows["cos_other"] == pytest.approx(
        np.sin([0.7, 0.4]).tolist() + np.cos([0.9, 1.2]).tolist()
    )
    assert np.allclose(np.array(rows["margin"]), np.array(rows["cos_own"]) - rows["cos_other"])


def test_rule_params_keep_only_the_chosen_rule(tmp_path: Path) -> None:
    assert rule_params(ovl_config(tmp_path)) == {"rule": "sigma", "k": 3.0}
    topk = ovl_config(tmp_path, overlap_rule="topk", overlap_top_k=2, overlap_k=1)
    assert rule_params(topk) == {"rule": "topk", "top_k": 2}


def _stages(tmp_path: Path, **info: object):
    names = [f"class_{i:02d}" for i in range(10)]
    x, labels = ovl_clusters(10, 20, dim=64, seed=5, twins=((1, 7), (3, 4)))
    splits = ["train" if i % 4 else "test" for i in range(len(labels))]
    table = ovl_embeddings_table(x, labels, names, splits)
    embeddings = ovl_embeddings_stage(tmp_path, table, names, rows_per_shard=64)
    return dataset_stage(tmp_path, names, **info), embeddings


def test_task_flags_the_planted_pairs_and_writes_readable_tables(tmp_path: Path) -> None:
    images, embeddings = _stages(
        tmp_path, planted_pairs=[["class_01", "class_07"], ["class_03", "class_04"]]
    )
    config = ovl_config(tmp_path, pair_samples=5)
    with disable_run_logger():
        similarity = class_similarity_task.fn(images, embeddings, config.params.class_similarity)
        manifest = overlap_task.fn(images, similarity, embeddings, config.params.overlap)
    assert manifest.info["n_pairs"] == 2 and manifest.info["n_classes"] == 4
    assert manifest.info["planted"] == {
        "found": [["class_01", "class_07"], ["class_03", "class_04"]],
        "missed": [],
        "extra": [],
    }
    for name, schema in (
        ("overlap_pairs", OVERLAP_PAIRS),
        ("overlap_classes", OVERLAP_CLASSES),
        ("pair_samples", PAIR_SAMPLES),
    ):
        path = manifest.path(f"{name}.parquet")
        assert read_parquet(manifest.location, f"{name}.parquet").schema.equals(schema)
        assert pl.read_parquet(path).columns == schema.names
        assert duckdb.sql(f"SELECT * FROM '{path}'").columns == schema.names
    samples = pl.read_parquet(manifest.path("pair_samples.parquet"))
    assert samples.height == 2 * 2 * 5
    assert samples.group_by("pair_id", "label").len()["len"].to_list() == [5] * 4
    groups = pl.read_parquet(manifest.path("overlap_classes.parquet"))
    assert groups["group"].to_list() == [0, 0, 1, 1] and groups["label"].to_list() == [1, 7, 3, 4]


def test_rule_that_flags_nothing_writes_empty_tables(tmp_path: Path) -> None:
    images, embeddings = _stages(tmp_path)
    config = ovl_config(tmp_path, overlap_rule="threshold", overlap_threshold=1.0)
    with disable_run_logger():
        similarity = class_similarity_task.fn(images, embeddings, config.params.class_similarity)
        manifest = overlap_task.fn(images, similarity, embeddings, config.params.overlap)
    assert manifest.info["n_pairs"] == 0 and manifest.info["flagged_labels"] == []
    for name in ("overlap_pairs", "overlap_classes", "pair_samples"):
        assert pl.read_parquet(manifest.path(f"{name}.parquet")).height == 0


def test_empty_result_warns_with_a_way_out(caplog: pytest.LogCaptureFixture) -> None:
    summary = {"rule": "sigma", "k": 3.0, "mu": 0.1, "sigma": 0.2, "n_pairs": 0}
    with caplog.at_level(logging.WARNING):
        _log_summary(logging.getLogger("test-overlap"), summary, 10)
    assert "flagged no pair of the 10 classes" in caplog.text
    assert "lower --overlap-k" in caplog.text


@flow
def _similarity_then_overlap(
    images: StageManifest, embeddings: StageManifest, config: RunConfig
) -> list[str]:
    """Both stages through the Prefect engine; returns their final state names."""
    similarity = class_similarity_task(images, embeddings, config, return_state=True)
    overlap = overlap_task(images, similarity.result(), embeddings, config, return_state=True)
    return [similarity.name, overlap.name]


@pytest.mark.usefixtures("prefect_server")
def test_changing_the_rule_reruns_overlap_only(tmp_path: Path) -> None:
    images, embeddings = _stages(tmp_path)
    config = ovl_config(tmp_path)
    assert _similarity_then_overlap(images, embeddings, config) == ["Completed", "Completed"]
    assert _similarity_then_overlap(images, embeddings, config) == ["Cached", "Cached"]
    looser = ovl_config(tmp_path, overlap_k=2.0)
    assert _similarity_then_overlap(images, embeddings, looser) == ["Cached", "Completed"]
    # Parameters of another rule do not matter to this one.
    other = ovl_config(tmp_path, overlap_k=2.0, overlap_threshold=0.1)
    assert _similarity_then_overlap(images, embeddings, other) == ["Cached", "Cached"]
