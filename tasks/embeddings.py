"""Embeddings stage: images table -> sharded ``embeddings`` table, resumable shard by shard.

On one machine one task embeds every shard; on a Dask or Ray cluster one task per images shard
runs on the workers first (each worker process builds its model once, ``worker_extractor``), and
the stage's task then finds every shard finished and writes the manifest. A shard task skips a
finished shard, so a rerun, a retried task or a second worker given the same shard does no work
twice; tasks return a few numbers, never arrays: the embeddings travel through the output storage.

This module declares the stage and distributes its work; the model is built in
``tasks.models.extractor``, shards are read, embedded and written in
``tasks.models.embedding_shards``, progress is shown by ``tasks.core.progress``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.runtime import flow_run as current_flow_run
from prefect.utilities.annotations import unmapped

from storage.code_version import code_version_of
from storage.embedding_store import EmbeddingStore, store_location
from storage.fingerprint import hash_value
from storage.fs import Location
from storage.manifest import StageManifest, intact_or_cleared
from storage.tables import listed_shards
from tasks.core.params import EmbeddingsParams
from tasks.core.progress import Progress
from tasks.core.results import EmbeddingsInfo, ImagesInfo
from tasks.core.stage import Output, Stage
from tasks.images import transient
from tasks.models import hardware
from tasks.models.embedding_shards import embed_shard, extract_shards, shard_done
from tasks.models.extractor import build_extractor, weights_fingerprint, worker_extractor
from tasks.models.reuse import Reuse


def _key_params(params: EmbeddingsParams) -> dict[str, Any]:
    device = hardware.device_name(params.device)
    return {
        "model": params.model,
        "weights": weights_fingerprint(Path(params.weights)) if params.weights else None,
        "pretrained": params.pretrained,
        "random_init_seed": None if params.pretrained else params.seed,
        "image_size": params.image_size,
        "precision": hardware.precision_name(params.precision, device),
    }


STAGE = Stage("embeddings", key_params=_key_params, module=__name__, info_type=EmbeddingsInfo)


@functools.cache
def model_code() -> str:
    """Version of the code that decides an embedding's values (the model, its preprocessing, the
    forward pass): not the stage's, or an edit to a dataset reader would discard the store."""
    return code_version_of("tasks.models.extractor")


def embedding_store(
    params: EmbeddingsParams, warn: Callable[[str], None] | None = None
) -> EmbeddingStore:
    """The store of every embedding this model (weights, preprocessing, code) made under --out;
    ``warn`` gets a line per damaged store file dropped."""
    fingerprint = hash_value({"code": model_code(), **_key_params(params)})
    return EmbeddingStore.open(store_location(params.out, fingerprint), warn)


@STAGE.task()
def embeddings_task(images: StageManifest, params: EmbeddingsParams, target: Location) -> Output:
    """Embed every image with the model, one shard at a time; a rerun resumes at missing shards."""
    from tasks.models import models

    logger = get_run_logger()
    if params.random_weights:
        logger.warning("RANDOM WEIGHTS (--no-pretrained): embeddings and results are meaningless")
    extractor = build_extractor(params)
    progress = Progress(total=ImagesInfo.of(images).rows or 0)
    try:
        reuse = Reuse()
        store = embedding_store(params, logger.warning)
        rows = extract_shards(
            extractor, images.location, target, progress, logger, store=store, tally=reuse
        )
    finally:
        progress.close()
    info = {
        "model": params.model,
        "weights_source": models.weights_source(params.model, params.pretrained, params.weights),
        "preprocessing": extractor.prep.as_dict(),
        "precision": extractor.precision,
        "device": str(extractor.device),
        "dtype": "float32",
        "dim": extractor.dim,
        "l2_normalized": True,
        "rows": sum(rows.values()),
        "dataset_fingerprint": images.fingerprint,
        "embedded": reuse.embedded,
        "reused": reuse.reused,
        "cached": reuse.cached,
        "flow_run": current_flow_run.id,  # a later run that finds this cached did none of it
    }
    logger.info(
        "embedded %d images with %s (%s, %s); %d reused from the embedding store; "
        "%d already in finished shards",
        reuse.embedded,
        params.model,
        extractor.precision,
        extractor.device,
        reuse.reused,
        reuse.cached,
    )
    return Output(written=rows, info=info)


@task(
    name="embed shard",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=transient,
    task_run_name="embed {shard}",
)
def embed_shard_task(
    images: StageManifest, target: Location, shard: str, params: EmbeddingsParams
) -> dict[str, Any]:
    """Embed one images shard into the embeddings folder ``target``, unless it is there."""
    rows = images.files[shard].rows
    if shard_done(target, shard, rows):
        return {"shard": shard, "rows": rows, "skipped": True}
    extractor = worker_extractor(params)
    store = embedding_store(params, get_run_logger().warning)
    reuse = embed_shard(extractor, images.location, target, shard, store)
    get_run_logger().info(
        "%s: %d images embedded on %s, %d reused",
        shard,
        reuse.embedded,
        extractor.device,
        reuse.reused,
    )
    return {"shard": shard, "rows": rows, "skipped": False}


def embeddings(images: StageManifest, params: EmbeddingsParams, on_cluster: bool) -> StageManifest:
    """The embeddings stage: one task on one machine, or one task per shard on a cluster first."""
    target = STAGE.location(images=images, params=params) if on_cluster else None
    # a damaged shard that still reads would count as done: cleared before the shard tasks look
    if target is not None and intact_or_cleared(target) is None:
        target.remove_temporaries()
        names = listed_shards(images)
        futures = embed_shard_task.map(unmapped(images), unmapped(target), names, unmapped(params))
        wait(futures)
        done = [future.result() for future in futures]  # raises the first shard's failure
        skipped = sum(d["skipped"] for d in done)
        get_run_logger().info(
            "embedded %d shard(s) on the cluster (%d already done)", len(done) - skipped, skipped
        )
    return embeddings_task(images, params)
