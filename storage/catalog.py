"""What an output root holds: its tables (rows, schema, size) and the latest run's results.

Reads Parquet footers only, never the data, so listing a root of CIFAR-100 embeddings is quick,
and works on any fsspec URL, since every path goes through ``Location``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.fs import TMP_MARKER, Location
from storage.layout import OutputLayout
from storage.runs import read_latest
from storage.tables import SHARD_PREFIX, read_parquet

REPORT_SUFFIXES = (".html", ".md")


@dataclass
class TableInfo:
    """One table in a stage folder: a single Parquet file, or the shards of a sharded table."""

    dataset: str
    stage: str
    key: str
    name: str
    url: str
    files: list[str] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    schema: pa.Schema | None = None
    latest: bool = False

    @property
    def folder(self) -> str:
        """``dataset/stage/key``: the stage folder relative to the output root."""
        return f"{self.dataset}/{self.stage}/{self.key}"


def _table_name(file_name: str, stage: str) -> str:
    """``overlap_pairs.parquet`` -> ``overlap_pairs``; shards ``part-*.parquet`` -> the stage."""
    return stage if file_name.startswith(SHARD_PREFIX) else file_name.removesuffix(".parquet")


def _latest_folders(record: dict[str, Any] | None) -> set[str]:
    """``dataset/stage/key`` of every stage folder the run record used."""
    if not record:
        return set()
    return {
        "/".join(stage["url"].rstrip("/").rsplit("/", 3)[-3:])
        for stage in record.get("stages", {}).values()
    }


def list_tables(url: str) -> list[TableInfo]:
    """Every Parquet table under ``OUT/<dataset>/<stage>/<key>/``, sorted by folder and name."""
    root = Location(url)
    fs, base = root.fs, root.path.rstrip("/")
    latest = _latest_folders(read_latest(OutputLayout(root)))
    found = fs.glob(posixpath.join(base, "*", "*", "*", "*.parquet"), detail=True)
    tables: dict[tuple[str, str], TableInfo] = {}
    for path, info in sorted(found.items()):
        relative = path.removeprefix(base).strip("/")
        dataset, stage, key, file_name = relative.split("/")
        if TMP_MARKER in file_name:  # an interrupted atomic write, not a table
            continue
        folder = root.child(dataset, stage, key)
        name = _table_name(file_name, stage)
        table = tables.setdefault(
            (relative.rsplit("/", 1)[0], name),
            TableInfo(
                dataset, stage, key, name, folder.url, latest=f"{dataset}/{stage}/{key}" in latest
            ),
        )
        with folder.open(file_name) as handle:
            parquet = pq.ParquetFile(handle)
            table.rows += parquet.metadata.num_rows
            table.schema = table.schema or parquet.schema_arrow
        table.files.append(file_name)
        table.bytes += int(info.get("size") or folder.size(file_name))
    return sorted(tables.values(), key=lambda t: (t.dataset, t.stage, t.key, t.name))


def stage_folder(root: Location, record: dict[str, Any], stage: str) -> Location | None:
    """A stage folder of a run record: under ``root`` (which may have moved), else as recorded."""
    entry = record.get("stages", {}).get(stage)
    if entry is None:
        return None
    recorded = entry["url"].rstrip("/")
    moved = root.child(*recorded.rsplit("/", 3)[-3:])
    return moved if moved.exists() else Location(recorded)


def latest_table(root: Location, record: dict[str, Any], stage: str, name: str) -> pa.Table | None:
    """One table of the latest run (e.g. overlap/overlap_pairs.parquet), or None when absent."""
    folder = stage_folder(root, record, stage)
    if folder is None or not folder.exists(name):
        return None
    return read_parquet(folder, name)


def top_overlap_pairs(root: Location, record: dict[str, Any], n: int) -> pa.Table | None:
    """The ``n`` flagged class pairs with the highest centroid cosine."""
    table = latest_table(root, record, "overlap", "overlap_pairs.parquet")
    if table is None:
        return None
    table = table.sort_by([("cosine", "descending")]).slice(0, n)
    return table.select(["class_a", "class_b", "cosine", "z", "same_superclass"])


def top_confusion_pairs(root: Location, record: dict[str, Any], n: int) -> pa.Table | None:
    """The ``n`` flagged confusion pairs of highest MisRate (all pairs when none is flagged)."""
    table = latest_table(root, record, "confusion", "confusion_pairs.parquet")
    if table is None:
        return None
    flagged = table.filter(pc.field("flagged"))
    table = (flagged if flagged.num_rows else table).sort_by([("MisRate", "descending")])
    columns = ["True", "Pred", "MisRate", "F1(True)", "F1(Pred)", "q_value", "flagged"]
    return table.slice(0, n).select(columns)


def report_paths(root: Location, record: dict[str, Any]) -> list[str]:
    """URLs of the latest run's reports (report.html, report.md, summary.md), when it wrote any."""
    paths = []
    for stage, entry in record.get("stages", {}).items():
        folder = stage_folder(root, record, stage)
        for file_name in entry.get("tables", {}):
            if file_name.endswith(REPORT_SUFFIXES) and folder is not None:
                paths.append(folder.child(file_name).url)
    return sorted(paths)
