"""``TableSpec``: one Parquet table's name, writing stage, meaning, columns, schema and I/O."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from storage.fs import Location
from storage.tables import (
    SHARD_PREFIX,
    read_parquet,
    read_shards,
    shard_name,
    table_name,
    write_parquet,
)

# A table's Arrow schema: fixed, or built from the embedding dimension (embeddings, centroids).
SchemaSource = pa.Schema | Callable[[int], pa.Schema]


@dataclass(frozen=True)
class TableSpec:
    """One table: its file name, writing stage, meaning, columns and Arrow schema."""

    name: str
    stage: str
    description: str
    columns: dict[str, str] = field(hash=False)
    sharded: bool = False
    arrow: SchemaSource = field(default_factory=lambda: pa.schema([]), repr=False, hash=False)
    # stages besides ``stage`` that write the same table (analyze-predictions)
    also_written_by: tuple[str, ...] = ()

    @property
    def needs_dim(self) -> bool:
        """True when the schema depends on the embedding dimension."""
        return callable(self.arrow)

    def schema(self, dim: int | None = None) -> pa.Schema:
        """The Arrow schema; ``dim`` (the embedding dimension) only for embeddings and centroids."""
        if not self.needs_dim:
            if dim is not None:
                raise ValueError(f"table {self.name} has no embedding column; do not pass dim")
            return self.arrow
        if dim is None or dim < 1:
            raise ValueError(f"table {self.name} needs dim=<embedding dimension >= 1>, got {dim}")
        return self.arrow(dim)

    @property
    def file_name(self) -> str:
        """``<name>.parquet``, or the shards' glob ``part-*.parquet`` of a sharded table."""
        return f"{SHARD_PREFIX}*.parquet" if self.sharded else table_name(self.name)

    def file(self, shard: int | None = None) -> str:
        """The file to write: ``<name>.parquet``, or shard ``shard``'s ``part-NNNNN.parquet``."""
        if self.sharded != (shard is not None):
            need = "is sharded: pass shard=<index>" if self.sharded else "has one file: no shard"
            raise ValueError(f"table {self.name} {need}")
        return shard_name(shard) if shard is not None else self.file_name

    def write(
        self,
        location: Location,
        table: pa.Table,
        *,
        dim: int | None = None,
        shard: int | None = None,
    ) -> int:
        """Write ``table`` (cast to the schema) atomically into ``location``; return its rows."""
        name = self.file(shard)
        if self.needs_dim and dim is None:
            dim = embedding_dim(table.schema)
        return write_parquet(location, name, table, self.schema(dim))

    def read(self, location: Location, columns: list[str] | None = None) -> pa.Table:
        """The table in ``location`` (all shards, in order), optionally only some columns."""
        unknown = [c for c in columns or [] if c not in self.columns]
        if unknown:
            raise ValueError(
                f"table {self.name} has no column(s) {', '.join(unknown)}; "
                f"its columns: {', '.join(self.columns)}"
            )
        if self.sharded:
            return read_shards(location, columns)
        return read_parquet(location, self.file_name, columns)


def embedding_dim(schema: pa.Schema) -> int | None:
    """The size of a schema's fixed-size-list column (embedding, centroid), if it has one."""
    for column_type in schema.types:
        if pa.types.is_fixed_size_list(column_type):
            return column_type.list_size
    return None
