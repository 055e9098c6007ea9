"""--centroid-split: which images make the class centroids (all, or the train split only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prefect.logging import disable_run_logger

from flows.config import RunConfig
from storage.tables import embedding_matrix, read_parquet
from tasks.class_similarity import STAGE, class_similarity_task
from tests.support.builders import (
    dataset_stage,
    ovl_clusters,
    ovl_config,
    ovl_embeddings_stage,
    ovl_embeddings_table,
)

NAMES = ["c0", "c1", "c2"]


def _stages(tmp_path: Path):
    """Train images in three clusters; the test images of c1 sit on c0's cluster instead."""
    x, labels = ovl_clusters(3, 40, dim=8, seed=4, noise=0.1)
    splits = np.array((["train"] * 30 + ["test"] * 10) * 3)
    moved = (labels == 1) & (splits == "test")
    x[moved] = x[(labels == 0) & (splits == "test")]
    table = ovl_embeddings_table(x, labels, NAMES, splits.tolist())
    embeddings = ovl_embeddings_stage(tmp_path, table, NAMES, rows_per_shard=25)
    return dataset_stage(tmp_path, NAMES), embeddings, x, labels, splits


def _unit_mean(rows: np.ndarray) -> np.ndarray:
    mean = rows.astype(np.float64).mean(axis=0)
    return mean / np.linalg.norm(mean)


def test_train_centroids_leave_the_test_images_out(tmp_path: Path) -> None:
    images, embeddings, x, labels, splits = _stages(tmp_path)
    results = {}
    with disable_run_logger():
        for split in ("all", "train"):
            config = ovl_config(tmp_path / split, centroid_split=split)
            results[split] = class_similarity_task.fn(
                images, embeddings, config.params.class_similarity
            )
    train = results["train"]
    assert train.info["centroid_split"] == "train" and train.info["centroid_images"] == 90
    assert results["all"].info["centroid_images"] == 120
    table = read_parquet(train.location, "centroids.parquet")
    assert table.column("count").to_pylist() == [30, 30, 30]
    centroids = embedding_matrix(table, "centroid")
    for label in range(3):
        expected = _unit_mean(x[(labels == label) & (splits == "train")])
        np.testing.assert_allclose(centroids[label], expected, atol=1e-5)

    def cosine(manifest, a: str, b: str) -> float:
        rows = read_parquet(manifest.location, "class_similarity.parquet").to_pandas()
        return float(rows[(rows.class_a == a) & (rows.class_b == b)].cosine.iloc[0])

    # with all images, c1's test images (on c0's cluster) pull the two centroids together
    assert cosine(results["all"], "c0", "c1") > cosine(train, "c0", "c1") + 0.05


def test_the_split_is_part_of_the_stage_key_and_checked(tmp_path: Path) -> None:
    default = ovl_config(tmp_path)
    assert default.centroid_split == "all"
    train = ovl_config(tmp_path, centroid_split="train")
    assert STAGE.key_params(train) == {"centroid_split": "train"}
    assert STAGE.key_params(default) == {}  # default runs keep their cache keys
    with pytest.raises(ValueError, match="centroid_split"):
        RunConfig(centroid_split="test")
