"""Embeddings stage: images table -> sharded ``embeddings`` table, resumable shard by shard.

On one machine one task embeds every shard; on a Dask or Ray cluster one task per images shard
runs on the workers first (each worker process builds its model once, ``worker_extractor``), and
the stage's task then finds every shard finished and writes the manifest. A shard task skips a
finished shard, so a rerun, a retried task or a second worker given the same shard does no work
twice; tasks return a few numbers, never arrays: the embeddings travel through the output storage.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.utilities.annotations import unmapped
from tqdm.auto import tqdm

from storage import registry
from storage.embedding_store import EmbeddingStore, store_location
from storage.fingerprint import hash_local_file, hash_value
from storage.fs import Location
from storage.manifest import StageManifest, intact_or_cleared
from storage.schemas.images import POINTER, embedding_type
from storage.tables import listed_shards, parquet_rows, read_parquet, shard_index, shard_names
from tasks.core.params import EmbeddingsParams
from tasks.core.stage import Output, Stage
from tasks.images import transient
from tasks.models import hardware
from tasks.models.reuse import Reuse, embed_with_store
from tasks.sources import sharded_load

if TYPE_CHECKING:  # torch and timm load where a model is built: a cached run never needs them
    from tasks.models.embed import Extractor

log = logging.getLogger(__name__)
KEY_COLUMNS = ["sample_id", "split", "label", "class_name"]


def build_extractor(params: EmbeddingsParams) -> Extractor:
    """Model, preprocessing, device and precision exactly as a run of ``params`` uses them."""
    from tasks.models import models
    from tasks.models.embed import Extractor

    device = models.resolve_device(params.device)
    precision = models.resolve_precision(params.precision, device)
    model = models.build_model(
        params.model,
        pretrained=params.pretrained,
        weights=params.weights,
        image_size=params.image_size,
        seed=params.seed,
    )
    return Extractor(
        model=models.prepare(model, device, precision),
        prep=models.preprocessing_of(model),
        device=device,
        precision=precision,
        batch_size=params.batch_size,
    )


def embeddings_table(keys: pa.Table, vectors: Any) -> pa.Table:
    """An ``embeddings`` shard: a row per image of ``keys`` (sample_id, split, label, class_name)
    in its order, plus ``embedding``, a fixed-size float32 list."""
    dim = vectors.shape[1]
    flat = pa.array(vectors.reshape(-1), pa.float32())
    column = pa.FixedSizeListArray.from_arrays(flat, type=embedding_type(dim))
    return keys.append_column("embedding", column)


def shard_done(target: Location, name: str, expected_rows: int) -> bool:
    """True when a shard exists under its final name, reads, and has the expected rows."""
    if not target.exists(name):
        return False
    try:
        return parquet_rows(target, name) == expected_rows
    except Exception:  # a truncated or foreign file: recompute it
        return False


def weights_fingerprint(path: Path) -> str:
    """sha256 of a weights file, read once per process while its size and mtime stay the same."""
    stat = path.stat()
    return _hash_file(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    return hash_local_file(Path(path))


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


STAGE = Stage("embeddings", key_params=_key_params, module=__name__)


def embedding_store(params: EmbeddingsParams) -> EmbeddingStore:
    """The store of every embedding this model (weights, preprocessing, code) made under --out."""
    fingerprint = hash_value({"code": STAGE.code, **_key_params(params)})
    return EmbeddingStore.open(store_location(params.out, fingerprint))


class Progress:
    """A terminal progress bar (images/s) mirrored to a Prefect progress artifact."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.reported = total, 0, -1.0
        self.bar = tqdm(total=total, unit="img", desc="extract", smoothing=0.1)
        self.artifact = create_progress_artifact(
            progress=self.percent, key="embedding-extraction", description="images embedded"
        )

    @property
    def percent(self) -> float:
        return 100.0 * self.done / max(self.total, 1)

    def start_at(self, done: int) -> None:
        """Count images a resumed run finds already embedded (not in the images/s rate)."""
        self.done = self.bar.initial = self.bar.n = done
        self.bar.refresh()
        self.reported = self.percent
        update_progress_artifact(self.artifact, progress=self.percent)

    def __call__(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        if self.percent - self.reported >= 1.0 or self.done == self.total:
            self.reported = self.percent
            update_progress_artifact(self.artifact, progress=self.percent)

    def close(self) -> None:
        self.bar.close()


def embed_shard(
    extractor: Extractor,
    images: Location,
    target: Location,
    name: str,
    store: EmbeddingStore | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Reuse:
    """Embed one images shard (images the store has not seen) and write its embeddings shard
    (atomically) under ``name``."""
    table = read_parquet(images, name, [*KEY_COLUMNS, "image", *POINTER.names])
    image_bytes = sharded_load.image_bytes(table)  # copied bytes, or read from the source
    if store is None:
        vectors, reuse = extractor.embed_encoded(image_bytes, on_batch), Reuse(len(image_bytes))
    else:
        vectors, reuse = embed_with_store(extractor, store, image_bytes, on_batch=on_batch)
    shard = embeddings_table(table.select(KEY_COLUMNS), vectors)
    spec = registry.table("embeddings")
    spec.write(target, shard, dim=vectors.shape[1], shard=shard_index(name))
    return reuse


def extract_shards(
    extractor: Extractor,
    images: Location,
    target: Location,
    progress: Any,
    logger: logging.Logger | logging.LoggerAdapter = log,
    *,
    store: EmbeddingStore | None = None,
    tally: Reuse | None = None,
) -> dict:
    """Embed every images shard that has no finished embeddings shard; return rows per shard.

    With a ``store``, only images it has not seen are embedded; ``tally`` adds up how many.
    """
    rows = {}
    todo = []
    for name in shard_names(images):
        rows[name] = parquet_rows(images, name)
        if not shard_done(target, name, rows[name]):
            todo.append(name)
    if todo and len(todo) < len(rows):
        logger.info("resuming: %d of %d shards already done", len(rows) - len(todo), len(rows))
    progress.start_at(sum(rows.values()) - sum(rows[name] for name in todo))
    for name in todo:
        done = embed_shard(extractor, images, target, name, store, on_batch=progress)
        if tally is not None:
            tally.add(done)
    return rows


@STAGE.task()
def embeddings_task(images: StageManifest, params: EmbeddingsParams, target: Location) -> Output:
    """Embed every image with the model, one shard at a time; a rerun resumes at missing shards."""
    from tasks.models import models

    logger = get_run_logger()
    if params.random_weights:
        logger.warning("RANDOM WEIGHTS (--no-pretrained): embeddings and results are meaningless")
    stale = target.remove_temporaries()
    if stale:
        logger.info("removed %d unfinished shard file(s) of an interrupted run", len(stale))
    extractor = build_extractor(params)
    progress = Progress(total=images.info["rows"])
    try:
        reuse = Reuse()
        store = embedding_store(params)
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
    }
    logger.info(
        "embedded %d images with %s (%s, %s); %d reused from earlier runs",
        reuse.embedded,
        params.model,
        extractor.precision,
        extractor.device,
        reuse.reused,
    )
    return Output(written=rows, info=info)


# One model per worker process and model spec: building it takes longer than a small shard.
_EXTRACTORS: dict[str, Extractor] = {}
_BUILD_LOCK = threading.Lock()


def model_spec(params: EmbeddingsParams) -> str:
    """Everything that decides which model (and how) a worker builds."""
    fields = ("model", "pretrained", "weights", "image_size", "seed", "device", "precision")
    return hash_value({f: getattr(params, f) for f in fields} | {"batch": params.batch_size})


def worker_extractor(params: EmbeddingsParams) -> Extractor:
    """This process's extractor for ``params``'s model, built on first use."""
    key = model_spec(params)
    with _BUILD_LOCK:
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = build_extractor(params)
        return _EXTRACTORS[key]


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
    reuse = embed_shard(extractor, images.location, target, shard, embedding_store(params))
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
