"""Extraction as a map over shards, for Dask or Ray workers: one task per images shard.

Each worker process builds its model once (``worker_extractor``) and reuses it for every shard
it is given; a shard task skips a shard that is already finished, so a rerun, a retried task or a
second worker given the same shard does no work twice. Tasks return a few numbers, never arrays:
the embeddings travel through the output storage.
"""

from __future__ import annotations

import threading
from typing import Any

from prefect import task
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.utilities.annotations import unmapped

from storage.fingerprint import hash_value
from storage.fs import Location
from storage.manifest import StageManifest, valid_manifest
from storage.tables import listed_shards
from tasks.embeddings import (
    EXTRACT,
    build_extractor,
    embed_shard,
    extract_embeddings_task,
    shard_done,
)
from tasks.images import transient
from tasks.models.embed import Extractor

# One model per worker process and model spec: building it takes longer than a small shard.
_EXTRACTORS: dict[str, Extractor] = {}
_BUILD_LOCK = threading.Lock()


def model_spec(config: Any) -> str:
    """Everything that decides which model (and how) a worker builds."""
    fields = ("model", "pretrained", "weights", "image_size", "seed", "device", "precision")
    return hash_value({f: getattr(config, f) for f in fields} | {"batch": config.batch_size})


def worker_extractor(config: Any) -> Extractor:
    """This process's extractor for ``config``'s model, built on first use."""
    key = model_spec(config)
    with _BUILD_LOCK:
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = build_extractor(config)
        return _EXTRACTORS[key]


@task(
    name="embed shard",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=transient,
    task_run_name="embed {shard}",
)
def embed_shard_task(
    images: StageManifest, target: Location, shard: str, config: Any
) -> dict[str, Any]:
    """Embed one images shard into the embeddings folder ``target``, unless it is there."""
    rows = images.files[shard].rows
    if shard_done(target, shard, rows):
        return {"shard": shard, "rows": rows, "skipped": True}
    extractor = worker_extractor(config)
    embed_shard(extractor, images.location, target, shard)
    get_run_logger().info("%s: %d images on %s", shard, rows, extractor.device)
    return {"shard": shard, "rows": rows, "skipped": False}


def extract_embeddings(images: StageManifest, config: Any, on_cluster: bool) -> StageManifest:
    """The embeddings stage: one task on one machine, or one task per shard on a cluster.

    On a cluster the shards are mapped over the workers first; ``extract_embeddings_task`` then
    finds every shard finished and only writes the manifest (and its cache record).
    """
    target = EXTRACT.location(images=images, config=config) if on_cluster else None
    if target is not None and valid_manifest(target) is None:
        target.remove_temporaries()
        names = listed_shards(images)
        futures = embed_shard_task.map(unmapped(images), unmapped(target), names, unmapped(config))
        wait(futures)
        done = [future.result() for future in futures]  # raises the first shard's failure
        skipped = sum(d["skipped"] for d in done)
        get_run_logger().info(
            "embedded %d shard(s) on the cluster (%d already done)", len(done) - skipped, skipped
        )
    return extract_embeddings_task(images, config)
