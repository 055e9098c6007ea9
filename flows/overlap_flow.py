"""The class-overlap flow: a table of contents of the stages, no arithmetic, no paths."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.config import RunConfig
from tasks.extract import extract_embeddings_task
from tasks.load import load_dataset_task
from tasks.preflight import check_run
from tasks.record import record_run_task


@flow(name="class-overlap", log_prints=True)
def class_overlap(config: RunConfig) -> dict[str, Any]:
    """Find the overlapping classes of an image dataset, model-free and through a classifier."""
    check_run(config)
    images = load_dataset_task(config)
    embeddings = extract_embeddings_task(images, config)
    return record_run_task(config, {"images": images, "embeddings": embeddings})
