"""Temporary files of interrupted writes: every stage folder and the store sweep their own, and
``overlap verify`` lists any that remain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prefect.logging import disable_run_logger

from flows.verify_cmd import verify_root
from storage.embedding_store import EmbeddingStore
from storage.fs import Location
from tasks.algorithms.delta import content_hashes
from tasks.class_similarity import STAGE as SIMILARITY
from tasks.class_similarity import class_similarity_task
from tasks.neighbours import STAGE as NEIGHBOURS
from tasks.neighbours import neighbours_task
from tests.support.builders import (
    dataset_stage,
    ovl_clusters,
    ovl_config,
    ovl_embeddings_stage,
    ovl_embeddings_table,
)

NAMES = ["apple", "bear", "cloud", "dog"]
LEFTOVER = "table.parquet.tmp-0123abcd"


def stages(tmp_path: Path):
    x, labels = ovl_clusters(len(NAMES), 15, dim=8, seed=1)
    embeddings = ovl_embeddings_stage(tmp_path, ovl_embeddings_table(x, labels, NAMES), NAMES)
    return dataset_stage(tmp_path, NAMES), embeddings


def plant(location: Location) -> Path:
    path = Path(location.file(LEFTOVER))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half a table")
    return path


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("stage", ["neighbours", "class_similarity"])
def test_a_stage_removes_the_temporaries_of_an_interrupted_run(tmp_path: Path, stage: str) -> None:
    images, embeddings = stages(tmp_path)
    config = ovl_config(tmp_path, knn_k=5)
    declared, body, params = {
        "neighbours": (NEIGHBOURS, neighbours_task, config.params.neighbours),
        "class_similarity": (SIMILARITY, class_similarity_task, config.params.class_similarity),
    }[stage]
    leftover = plant(declared.location(images=images, embeddings=embeddings, params=params))
    with disable_run_logger():
        manifest = body.fn(images, embeddings, params)
    assert not leftover.exists() and manifest.problems() == []
    leftover = plant(manifest.location)  # a finished stage found intact sweeps too
    with disable_run_logger():
        body.fn(images, embeddings, params)
    assert not leftover.exists()


def test_the_store_removes_the_temporaries_of_an_interrupted_write(tmp_path: Path) -> None:
    location = Location(str(tmp_path / "store"))
    EmbeddingStore.open(location).add(content_hashes([b"a"]), np.ones((1, 4), np.float32))
    leftover = plant(location)
    EmbeddingStore.open(location)
    assert not leftover.exists()


def test_verify_lists_leftovers_without_failing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _images, embeddings = stages(out / "synthetic")
    store = Location(str(out / "embedding_store" / "model"))
    EmbeddingStore.open(store).add(content_hashes([b"a"]), np.ones((1, 4), np.float32))
    planted = sorted([plant(embeddings.location), plant(store), plant(Location(str(out / "runs")))])
    lines: list[str] = []
    assert verify_root(str(out), lines.append) == 0
    listed = [line for line in lines if line.startswith("leftover: ")]
    assert listed == [
        f"leftover: {path} (temporary file of an interrupted write)" for path in planted
    ]
