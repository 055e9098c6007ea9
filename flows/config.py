"""One pydantic model holds every parameter of a run; the CLI and prefect.yaml map onto it.

``RunConfig`` is composed of the stages' own parameter models (``tasks.core.params``): each
field, default, bound and description is written once, next to the stage that uses it. The flow
hands each stage its own model (``config.params_of(ClassifierParams)``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.core.params import (
    DATASET_PATTERN,
    DEFAULT_MODEL,
    KNOWN_DATASETS,
    SYNTHETIC_IMAGE_SIZE,
    SYNTHETIC_MODEL,
    ClassifierParams,
    ConfusionParams,
    EmbeddingsParams,
    ImagesParams,
    NeighboursParams,
    OverlapParams,
    ReportParams,
    StageParams,
    SubsetParams,
)

__all__ = [
    "DATASET_PATTERN",
    "DEFAULT_MODEL",
    "KNOWN_DATASETS",
    "SYNTHETIC_IMAGE_SIZE",
    "SYNTHETIC_MODEL",
    "RunConfig",
]


class RunnerParams(StageParams):
    """Where a run's tasks execute: the flow's concern, no stage's."""

    runner: Literal["threads", "dask", "ray"] = Field(
        "threads",
        description="task runner: threads (one machine), dask or ray (extraction is spread over "
        "the cluster's workers, one shard per task)",
    )
    runner_address: str | None = Field(
        None,
        description="address of an existing Dask scheduler (tcp://host:8786) or Ray cluster "
        "(ray://host:10001, auto); default: start a local cluster",
    )
    workers: int = Field(
        2, ge=1, le=1024, description="worker processes of a local Dask or Ray cluster"
    )


# Pydantic orders inherited fields from the last base to the first: this order lists the
# fields as the stages run (images, embeddings, runner, overlap, ... report), for --help.
class RunConfig(
    ReportParams,
    ConfusionParams,
    ClassifierParams,
    SubsetParams,
    OverlapParams,
    NeighboursParams,
    RunnerParams,
    EmbeddingsParams,
    ImagesParams,
):
    """Every parameter of one run of the class-overlap flow."""
