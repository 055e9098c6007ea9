"""The images stage for sharded sources (``parquet:``, ``webdataset:``): indexed in place.

The images table of such a source holds one part per readable source shard: ids, labels, splits
and a pointer to each image (``POINTER`` columns), with a null ``image``; extraction reads the
bytes from the source (``image_bytes``). Indexing is resumable: each source shard's index is
written under ``_index/`` of the stage's folder as soon as it is done (by ``index_into``, which
a cluster maps over the shards), a rerun indexes only the shards without one, and the parts are
written from those indexes at the end, when labels and ``sample_id`` can be numbered.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage import registry
from storage.fs import Location
from storage.schemas.images import IMAGE_TYPE, POINTER
from tasks.core.dataset_kinds import argument_of, kind_of
from tasks.sources import DatasetError, DatasetInfo
from tasks.sources import parquet as parquet_source
from tasks.sources import webdataset as webdataset_source
from tasks.sources.decode import DEFAULT_MAX_PIXELS, image_problem
from tasks.sources.shards import (
    ShardIndex,
    SourceShard,
    combine,
    read_class_names,
    read_pointed,
    source_paths,
    try_index,
    without_undecodable,
)

log = logging.getLogger(__name__)
INDEX_FOLDER = "_index"
SOURCES_FILE = "sources.json"  # the shards' fingerprints: embeddings follow source edits
_NAMES_KEY = b"class_names"  # where a raw index keeps the class names its file declares
_SKIPPED_KEY = b"skipped"  # and the images it left out


@dataclass(frozen=True)
class ShardedSource:
    """A ``parquet:`` or ``webdataset:`` dataset and the flags that say how to read it."""

    kind: str
    spec: str
    image_column: str | None = None
    label_column: str | None = None
    split_column: str | None = None
    label_field: str = webdataset_source.DEFAULT_LABEL_FIELD
    class_names_file: str | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    @classmethod
    def of(cls, params: Any) -> ShardedSource | None:
        """The sharded source ``params.dataset`` names, else None (other dataset kinds)."""
        kind = kind_of(params.dataset)
        if kind is None or not kind.read_in_place:
            return None
        return cls(
            kind.name,
            argument_of(params.dataset),
            image_column=params.image_column,
            label_column=params.label_column,
            split_column=params.split_column,
            label_field=params.label_field,
            class_names_file=params.class_names,
            max_pixels=params.max_image_pixels or None,
        )

    def list(self) -> list[SourceShard]:
        """The source's shards with fingerprints (no content read)."""
        if self.kind == "parquet":
            return parquet_source.list_parquet(self.spec)
        return webdataset_source.list_webdataset(self.spec)

    def class_names(self) -> list[str] | None:
        """The ``--class-names`` file's names, if one was given."""
        return read_class_names(self.class_names_file) if self.class_names_file else None

    def columns(self, shards: list[SourceShard]) -> parquet_source.ParquetColumns | None:
        """Parquet: the columns, checked in the first readable footer (cheap); else None."""
        if self.kind != "parquet":
            return None
        flags = {"image": self.image_column, "label": self.label_column}
        columns, _ = parquet_source.check_source(
            shards, self.spec, split=self.split_column, **flags
        )
        return columns

    def check(self) -> tuple[list[SourceShard], parquet_source.ParquetColumns | None]:
        """Every cheap check before work: listing, credentials, columns, the class names file."""
        shards = self.list()
        self.class_names()
        return shards, self.columns(shards)

    def index(
        self, shard: SourceShard, columns: parquet_source.ParquetColumns | None
    ) -> ShardIndex:
        """One shard's rows: split, raw label and pointer; rows whose image does not decode (or
        is over the pixel limit) left out and named, as an image folder skips such files."""
        if columns is not None:
            index = parquet_source.index_shard(shard, columns)
        else:
            index = webdataset_source.index_shard(shard, self.label_field)
        return without_undecodable(index, lambda data: image_problem(data, self.max_pixels))

    def key_inputs(self, shards: list[SourceShard]) -> dict[str, Any]:
        """What determines the images table: shard fingerprints, flags and class names."""
        # the pixel limit is a key field of the images stage only when set (tasks/images.py)
        flags = {
            k: v for k, v in self.__dict__.items() if k not in ("class_names_file", "max_pixels")
        }
        return {
            "shards": [s.fingerprint for s in shards],
            "flags": flags,
            "class_names": self.class_names(),
        }


def index_name(position: int) -> str:
    """File of the raw index of the source's shard number ``position``."""
    return f"{position:05d}.parquet"


def _write_index(folder: Location, name: str, index: ShardIndex) -> None:
    names = json.dumps(index.class_names).encode()
    skipped = json.dumps(index.skipped).encode()
    table = index.table.replace_schema_metadata({_NAMES_KEY: names, _SKIPPED_KEY: skipped})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    folder.write_bytes(name, buffer.getvalue())


def _read_index(folder: Location, name: str, shard: SourceShard) -> ShardIndex:
    with folder.open(name) as handle:
        table = pq.ParquetFile(handle).read()  # not pq.read_table: no pyarrow.dataset scan
    metadata = table.schema.metadata or {}
    names = json.loads(metadata.get(_NAMES_KEY, b"null"))
    skipped = json.loads(metadata.get(_SKIPPED_KEY, b"[]"))
    return ShardIndex(shard, table.replace_schema_metadata(None), names, skipped=skipped)


def index_into(
    source: ShardedSource,
    columns: parquet_source.ParquetColumns | None,
    shard: SourceShard,
    position: int,
    folder: Location,
) -> ShardIndex:
    """The shard's index: read back when a previous run wrote it, else indexed and written."""
    name = index_name(position)
    if folder.exists(name):
        return _read_index(folder, name, shard)
    index = try_index(lambda s: source.index(s, columns), shard)
    if index.table is not None:
        _write_index(folder, name, index)
    return index


def images_part(rows: pa.Table) -> pa.Table:
    """An images-table part from combined index rows: no copied bytes, no superclasses."""
    n = rows.num_rows
    return pa.table(
        {
            **{c: rows.column(c) for c in ("sample_id", "split", "label", "class_name")},
            "coarse_label": pa.nulls(n, pa.int32()),
            "coarse_name": pa.nulls(n, pa.string()),
            "image": pa.nulls(n, IMAGE_TYPE),
            **{f.name: rows.column(f.name) for f in POINTER},
        }
    )


def load_sharded(
    source: ShardedSource, target: Location, dataset: str
) -> tuple[dict[str, int | None], dict[str, Any]]:
    """Index every shard not indexed yet, then write one images part per readable shard.

    Returns the parts written (name -> rows) and the manifest's info.
    """
    shards, columns = source.check()
    folder = target.child(INDEX_FOLDER)
    indexes = [index_into(source, columns, s, i, folder) for i, s in enumerate(shards)]
    tables, names, skipped = combine(indexes, dataset, source.class_names())
    counts = np.bincount(
        np.concatenate([t.column("label").to_numpy() for t in tables]), minlength=len(names)
    )
    empty = [n for n, c in zip(names, counts, strict=True) if c == 0]
    if len(names) < 2 or empty:
        raise DatasetError(
            f"{dataset}: {len(names)} class(es), of which without images: "
            f"{', '.join(empty[:10]) or 'none'}; overlap needs 2 or more classes with images"
        )
    spec = registry.table("images")
    written: dict[str, int | None] = {}
    for position, table in enumerate(tables):
        written[spec.file(position)] = spec.write(target, images_part(table), shard=position)
    target.write_bytes(SOURCES_FILE, json.dumps([s.fingerprint for s in shards]).encode())
    written[SOURCES_FILE] = None
    folder.remove_tree()
    splits = set(pc.unique(pa.chunked_array([t.column("split") for t in tables])).to_pylist())
    info = DatasetInfo(name=dataset, class_names=names, has_test_split="test" in splits)
    rows = int(counts.sum())
    return written, {
        **info.as_dict(),
        "rows": rows,
        "skipped_files": skipped,
        "source_shards": len(shards),
        "read_in_place": True,
    }


def image_bytes(table: pa.Table) -> list[bytes]:
    """Image bytes of images-table rows: the ``image`` column, or read from the source."""
    image = table.column("image").combine_chunks()
    if image.null_count == 0 or "source_file" not in table.column_names:
        return image.field("bytes").to_pylist()
    return read_pointed(table.select([f.name for f in POINTER]))


def with_image_bytes(table: pa.Table) -> pa.Table:
    """Rows with the ``image`` column filled from the source where it is null (the subset)."""
    image = table.column("image").combine_chunks()
    if image.null_count == 0 or "source_file" not in table.column_names:
        return table
    filled = pa.StructArray.from_arrays(
        [pa.array(image_bytes(table), pa.binary()), pa.array(source_paths(table), pa.string())],
        fields=list(image.type),
    )
    return table.set_column(table.column_names.index("image"), "image", filled)
