"""Reading and writing of extraction: an images shard in, its ``embeddings`` shard out
(atomically), and the resume loop over the shards not yet done."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from storage import registry
from storage.embedding_store import EmbeddingStore
from storage.fs import Location
from storage.schemas.images import POINTER, embedding_type
from storage.tables import parquet_rows, read_parquet, shard_index, shard_names
from tasks.models.reuse import Reuse, embed_with_store
from tasks.sources import sharded_load

if TYPE_CHECKING:  # torch and timm load where a model is built: a cached run never needs them
    from tasks.models.embed import Extractor

log = logging.getLogger(__name__)
KEY_COLUMNS = ["sample_id", "split", "label", "class_name"]


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

    With a ``store``, only images it has not seen are embedded; ``tally`` adds up what was done
    (embedded, reused from the store, cached in shards finished before).
    """
    rows = {}
    todo = []
    for name in shard_names(images):
        rows[name] = parquet_rows(images, name)
        if not shard_done(target, name, rows[name]):
            todo.append(name)
    if todo and len(todo) < len(rows):
        logger.info("resuming: %d of %d shards already done", len(rows) - len(todo), len(rows))
    finished = sum(rows.values()) - sum(rows[name] for name in todo)
    progress.start_at(finished)
    if tally is not None:
        tally.cached += finished
    for name in todo:
        done = embed_shard(extractor, images, target, name, store, on_batch=progress)
        if tally is not None:
            tally.add(done)
    return rows
