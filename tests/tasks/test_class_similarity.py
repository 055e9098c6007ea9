"""Class similarity: streaming centroids, FAISS cosine, neighbour ranks, bad-input errors."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from prefect.logging import disable_run_logger

from storage.schemas.class_similarity import CLASS_SIMILARITY, centroids_schema
from storage.tables import read_parquet
from tasks.algorithms.centroids import (
    cosine_matrix,
    neighbour_ranks,
    similarity_table,
    stream_centroids,
)
from tasks.class_similarity import class_similarity_task
from tests.support.builders import (
    dataset_stage,
    ovl_clusters,
    ovl_config,
    ovl_embeddings_stage,
    ovl_embeddings_table,
)

NAMES = [f"c{i}" for i in range(6)]


def _numpy_centroids(x: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    means = np.stack([x[labels == c].astype(np.float64).mean(axis=0) for c in range(n)])
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def test_centroids_and_cosine_match_plain_numpy() -> None:
    x, labels = ovl_clusters(6, 30, dim=16, seed=1)
    table = ovl_embeddings_table(x, labels, NAMES)
    centroids, counts = stream_centroids([table], NAMES)
    expected = _numpy_centroids(x, labels, 6)
    np.testing.assert_allclose(centroids, expected, atol=1e-5)
    np.testing.assert_array_equal(counts, np.full(6, 30))
    np.testing.assert_allclose(cosine_matrix(centroids), expected @ expected.T, atol=1e-5)


def test_streaming_equals_in_memory() -> None:
    x, labels = ovl_clusters(6, 25, dim=8, seed=2)
    order = np.random.default_rng(0).permutation(len(labels))  # classes spread over shards
    table = ovl_embeddings_table(x[order], labels[order], NAMES)
    whole, _ = stream_centroids([table], NAMES)
    shards = [table.slice(start, 17) for start in range(0, table.num_rows, 17)]
    streamed, counts = stream_centroids(iter(shards), NAMES)
    np.testing.assert_allclose(streamed, whole, atol=1e-6)
    assert counts.sum() == len(labels)


def test_neighbour_ranks_order_and_ties() -> None:
    cosine = np.array(
        [[1.0, 0.5, 0.9, 0.5], [0.5, 1, 0.1, 0.2], [0.9, 0.1, 1, 0.3], [0.5, 0.2, 0.3, 1]]
    )
    ranks = neighbour_ranks(cosine)
    assert ranks[0].tolist() == [0, 2, 1, 3]  # tie 0.5/0.5: lower label ranks first
    assert ranks[2].tolist() == [1, 3, 0, 2]
    table = similarity_table(cosine.astype(np.float32), ["a", "b", "c", "d"])
    assert table.num_rows == 12
    first = table.slice(0, 3).to_pydict()
    assert first["class_b"] == ["c", "b", "d"] and first["rank"] == [1, 2, 3]


def test_nan_embeddings_name_the_samples() -> None:
    x, labels = ovl_clusters(3, 10, seed=3)
    x[[4, 17]] = np.nan
    x[20, 0] = np.inf
    with pytest.raises(ValueError, match=r"3 embedding\(s\) contain NaN or inf.*\[4, 17, 20\]"):
        stream_centroids([ovl_embeddings_table(x, labels, NAMES[:3])], NAMES[:3])


def test_shards_of_different_dimension_are_refused() -> None:
    x8, labels = ovl_clusters(3, 10, dim=8)
    x4, _ = ovl_clusters(3, 10, dim=4)
    shards = [ovl_embeddings_table(x8, labels, NAMES), ovl_embeddings_table(x4, labels, NAMES)]
    with pytest.raises(ValueError, match="shard 1 has embeddings of dimension 4, expected 8"):
        stream_centroids(shards, NAMES[:3])


def test_class_without_rows_is_named() -> None:
    x, labels = ovl_clusters(3, 10)
    with pytest.raises(ValueError, match=r"1 class\(es\) have no embeddings: \['c3'\]"):
        stream_centroids([ovl_embeddings_table(x, labels, NAMES)], NAMES[:4])


def test_task_writes_tables_readable_by_polars_and_duckdb(tmp_path: Path) -> None:
    x, labels = ovl_clusters(6, 20, dim=8, seed=4)
    embeddings = ovl_embeddings_stage(
        tmp_path, ovl_embeddings_table(x, labels, NAMES), NAMES, rows_per_shard=33
    )
    config = ovl_config(tmp_path)
    images = dataset_stage(tmp_path, NAMES)
    with disable_run_logger():
        manifest = class_similarity_task.fn(images, embeddings, config.params.class_similarity)
        again = class_similarity_task.fn(images, embeddings, config.params.class_similarity)
    assert again.fingerprint == manifest.fingerprint and manifest.problems() == []
    assert manifest.info["dim"] == 8 and manifest.info["num_classes"] == len(NAMES)
    centroids = pl.read_parquet(manifest.path("centroids.parquet"))
    assert centroids.columns == centroids_schema(8).names and centroids.height == 6
    assert centroids["count"].to_list() == [20] * 6
    similarity_path = manifest.path("class_similarity.parquet")
    similarity = pl.read_parquet(similarity_path)
    assert similarity.columns == CLASS_SIMILARITY.names and similarity.height == 30
    assert read_parquet(manifest.location, "class_similarity.parquet").schema.equals(
        CLASS_SIMILARITY
    )
    # Both directions hold the same cosine; every class has ranks 1..5.
    symmetric = duckdb.sql(
        f"SELECT max(abs(s.cosine - t.cosine)) FROM '{similarity_path}' s "
        f"JOIN '{similarity_path}' t ON s.label_a = t.label_b AND s.label_b = t.label_a"
    ).fetchall()
    assert symmetric == [(0,)]
    ranks = duckdb.sql(f"SELECT list_sort(list(rank)) FROM '{similarity_path}' GROUP BY label_a")
    assert all(row[0] == [1, 2, 3, 4, 5] for row in ranks.fetchall())
