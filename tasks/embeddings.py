"""Extraction stage: images table -> sharded ``embeddings`` table, resumable shard by shard."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging import get_run_logger
from tqdm.auto import tqdm

from storage.fingerprint import code_version, hash_local_file
from storage.fs import Location
from storage.manifest import StageManifest
from storage.schemas.images import embedding_type, embeddings_schema
from storage.tables import parquet_rows, read_parquet, shard_names, write_parquet
from tasks.core.stage import Stage
from tasks.models import embed, fast_vit, models
from tasks.models.embed import Extractor

log = logging.getLogger(__name__)
# every module whose edit can change the embeddings' values
CODE = code_version(__file__, embed, models, fast_vit)
KEY_COLUMNS = ["sample_id", "split", "label", "class_name"]


def build_extractor(config: Any) -> Extractor:
    """Model, preprocessing, device and precision exactly as a run of ``config`` uses them."""
    device = models.resolve_device(config.device)
    precision = models.resolve_precision(config.precision, device)
    model = models.build_model(
        config.model,
        pretrained=config.pretrained,
        weights=config.weights,
        image_size=config.image_size,
        seed=config.seed,
    )
    return Extractor(
        model=models.prepare(model, device, precision),
        prep=models.preprocessing_of(model),
        device=device,
        precision=precision,
        batch_size=config.batch_size,
    )


def embeddings_table(keys: pa.Table, vectors: Any) -> pa.Table:
    """Key columns of an images shard plus its embeddings as a fixed-size float32 list."""
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


def _inputs(images: StageManifest, config: Any) -> dict[str, Any]:
    device = models.resolve_device(config.device)
    return {
        "images": images.fingerprint,
        "model": config.model,
        "weights": weights_fingerprint(Path(config.weights)) if config.weights else None,
        "pretrained": config.pretrained,
        "random_init_seed": None if config.pretrained else config.seed,
        "image_size": config.image_size,
        "precision": models.resolve_precision(config.precision, device),
        "code": CODE,
    }


EXTRACT = Stage("embeddings", _inputs)


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
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Embed one images shard and write its embeddings shard (atomically) under ``name``."""
    table = read_parquet(images, name, [*KEY_COLUMNS, "image"])
    image_bytes = table.column("image").combine_chunks().field("bytes").to_pylist()
    vectors = extractor.embed_encoded(image_bytes, on_batch=on_batch)
    shard = embeddings_table(table.select(KEY_COLUMNS), vectors)
    write_parquet(target, name, shard, embeddings_schema(vectors.shape[1]))


def extract_shards(
    extractor: Extractor,
    images: Location,
    target: Location,
    progress: Any,
    logger: logging.Logger | logging.LoggerAdapter = log,
) -> dict:
    """Embed every images shard that has no finished embeddings shard; return rows per shard."""
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
        embed_shard(extractor, images, target, name, on_batch=progress)
    return rows


@task(name="extract embeddings", cache_policy=EXTRACT.cache_policy, persist_result=True)
def extract_embeddings_task(images: StageManifest, config: Any) -> StageManifest:
    """Embed every image with the model, one shard at a time; a rerun resumes at missing shards."""
    logger = get_run_logger()
    target = EXTRACT.location(images=images, config=config)
    if config.random_weights:
        logger.warning("RANDOM WEIGHTS (--no-pretrained): embeddings and results are meaningless")
    stale = target.remove_temporaries()
    if stale:
        logger.info("removed %d unfinished shard file(s) of an interrupted run", len(stale))
    extractor = build_extractor(config)
    progress = Progress(total=images.info["rows"])
    try:
        rows = extract_shards(extractor, images.location, target, progress, logger)
    finally:
        progress.close()
    precision = extractor.precision
    info = {
        **{
            k: images.info.get(k)
            for k in (
                "class_names",
                "coarse_labels",
                "coarse_names",
                "has_test_split",
                "planted_pairs",
            )
        },
        "model": config.model,
        "weights_source": models.weights_source(config.model, config.pretrained, config.weights),
        "preprocessing": extractor.prep.as_dict(),
        "precision": precision,
        "device": str(extractor.device),
        "dtype": "float32",
        "dim": extractor.dim,
        "l2_normalized": True,
        "rows": sum(rows.values()),
        "dataset_fingerprint": images.fingerprint,
    }
    logger.info(
        "embedded %d images with %s (%s, %s)",
        info["rows"],
        config.model,
        precision,
        extractor.device,
    )
    params = {
        "model": config.model,
        "pretrained": config.pretrained,
        "random_init_seed": None if config.pretrained else config.seed,
        "image_size": config.image_size,
    }
    return EXTRACT.finish(target, rows, params, info, CODE)
