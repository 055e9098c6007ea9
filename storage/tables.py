"""Parquet tables: schema-checked, atomic, readable by pyarrow, polars and DuckDB as they are."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.fs import Location
from storage.manifest import StageManifest

COMPRESSION = "zstd"
SHARD_PREFIX = "part-"
SHARD_PATTERN = SHARD_PREFIX + "{index:05d}.parquet"


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return SHARD_PATTERN.format(index=index)


def shard_index(name: str) -> int:
    """Index of the shard file ``name`` (``part-00003.parquet`` -> 3)."""
    return int(name.removeprefix(SHARD_PREFIX).removesuffix(".parquet"))


def table_name(name: str) -> str:
    """File name of a single-file table."""
    return f"{name}.parquet"


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast ``table`` to ``schema`` (same column order); fail naming the columns that differ."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    extra = [n for n in table.column_names if n not in schema.names]
    if missing or extra:
        raise ValueError(f"table does not fit its schema: missing {missing}, unexpected {extra}")
    return table.select(schema.names).cast(schema)


def write_parquet(location: Location, name: str, table: pa.Table, schema: pa.Schema) -> int:
    """Write one Parquet file atomically; return its row count."""
    table = conform(table, schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression=COMPRESSION)
    location.write_bytes(name, buffer.getvalue())
    return table.num_rows


def read_parquet(location: Location, name: str, columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file (optionally some columns)."""
    with location.open(name) as handle:
        # ParquetFile, not pq.read_table: that one goes through pyarrow.dataset, whose import
        # alone costs a cached run a third of a second
        return pq.ParquetFile(handle).read(columns=columns)


def parquet_rows(location: Location, name: str) -> int:
    """Row count from the Parquet footer, without reading the data."""
    with location.open(name) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def shard_names(location: Location) -> list[str]:
    """Shard files present in ``location``, in order."""
    return [n for n in location.listdir() if n.startswith(SHARD_PREFIX) and n.endswith(".parquet")]


def read_shards(location: Location, columns: list[str] | None = None) -> pa.Table:
    """All shards of a sharded table, concatenated in order."""
    tables = [read_parquet(location, name, columns) for name in shard_names(location)]
    if not tables:
        raise FileNotFoundError(f"no shards in {location.url}")
    return pa.concat_tables(tables)


def listed_shards(manifest: StageManifest) -> list[str]:
    """The shards a stage's manifest lists, in order (stray files in its folder are ignored)."""
    return [n for n in shard_names(manifest.location) if n in manifest.files]


def stage_shards(manifest: StageManifest, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The shards a manifest lists, read one at a time."""
    names = listed_shards(manifest)
    if not names:
        raise FileNotFoundError(f"stage {manifest.stage} at {manifest.url} lists no shards")
    return (read_parquet(manifest.location, name, columns) for name in names)


def split_shards(
    manifest: StageManifest, split: str, columns: list[str] | None = None
) -> Iterator[pa.Table]:
    """The shards a manifest lists, read one at a time, keeping the rows of ``split`` only
    ("all": every row); a table with a ``split`` column (images, embeddings)."""
    if split == "all":
        return stage_shards(manifest, columns)
    wanted = None if columns is None else [*columns, "split"]
    return (
        shard.filter(pc.equal(shard.column("split"), split)).select(columns or shard.column_names)
        for shard in stage_shards(manifest, wanted)
    )


def embedding_matrix(table: pa.Table, name: str = "embedding") -> np.ndarray:
    """A fixed-size-list column (``embedding``, ``centroid``) as an (n, dim) float32 array."""
    column = table.column(name)
    if not pa.types.is_fixed_size_list(column.type):
        raise ValueError(f"{name} column must be a fixed-size list, got {column.type}")
    values = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(-1, column.type.list_size)


def read_embeddings(
    embeddings: StageManifest, sample_ids: pa.Array | pa.ChunkedArray
) -> tuple[np.ndarray, np.ndarray]:
    """The embeddings of ``sample_ids``, streamed shard by shard: (ids, matrix) by sample_id."""
    ids, parts = [], []
    for shard in stage_shards(embeddings, ["sample_id", "embedding"]):
        shard = shard.filter(pc.is_in(shard.column("sample_id"), value_set=sample_ids))
        ids.append(shard.column("sample_id").to_numpy())
        parts.append(embedding_matrix(shard))
    sample_id, matrix = np.concatenate(ids), np.concatenate(parts)
    order = np.argsort(sample_id)
    return sample_id[order], matrix[order]
