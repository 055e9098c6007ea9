"""The file index of an image folder's load: what each file was when it was read, and where its
row went, so the next load can take unchanged files from the last images table.

Written as ``file_index.parquet`` next to the images shards; the newest finished load of the same
dataset under the same output root is the one the next load starts from.
"""

from __future__ import annotations

import pyarrow as pa

from storage.fs import Location
from storage.layout import OutputLayout, slug
from storage.manifest import StageManifest, valid_manifest
from storage.tables import read_parquet, write_parquet

INDEX_NAME = "file_index.parquet"

FILE_INDEX = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),  # relative to the folder
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mtime_ns", pa.int64(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),  # sha256 of the stored bytes
        pa.field("shard", pa.string(), nullable=False),  # images shard file holding its row
        pa.field("row", pa.int64(), nullable=False),
    ]
)


def write_index(location: Location, table: pa.Table) -> int:
    """Write a load's file index atomically; return its rows."""
    return write_parquet(location, INDEX_NAME, table, FILE_INDEX)


def _finished_loads(out: str, dataset: str, stage: str) -> list[StageManifest]:
    root = OutputLayout.at(out).root.child(slug(dataset), stage)
    manifests = (valid_manifest(root.child(key)) for key in root.listdir())
    return [
        m
        for m in manifests
        if m is not None and INDEX_NAME in m.files and m.params.get("dataset") == dataset
    ]


def last_load(out: str, dataset: str, stage: str = "images") -> StageManifest | None:
    """The newest intact load of ``dataset`` under ``out`` that wrote a file index, if any."""
    loads = _finished_loads(out, dataset, stage)
    return max(loads, key=lambda m: m.created, default=None)


def read_index(manifest: StageManifest) -> pa.Table:
    """The file index of a finished load."""
    return read_parquet(manifest.location, INDEX_NAME)
