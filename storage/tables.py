"""Parquet tables: schema-checked, atomic, readable by pyarrow, polars and DuckDB as they are."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from storage.fs import Location

COMPRESSION = "zstd"
SHARD_PATTERN = "part-{index:05d}.parquet"


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return SHARD_PATTERN.format(index=index)


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
        return pq.read_table(handle, columns=columns)


def parquet_rows(location: Location, name: str) -> int:
    """Row count from the Parquet footer, without reading the data."""
    with location.open(name) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def shard_names(location: Location) -> list[str]:
    """Shard files present in ``location``, in order."""
    return [n for n in location.listdir() if n.startswith("part-") and n.endswith(".parquet")]


def read_shards(location: Location, columns: list[str] | None = None) -> pa.Table:
    """All shards of a sharded table, concatenated in order."""
    tables = [read_parquet(location, name, columns) for name in shard_names(location)]
    if not tables:
        raise FileNotFoundError(f"no shards in {location.url}")
    return pa.concat_tables(tables)
