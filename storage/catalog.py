"""What an output root holds: its tables (rows, schema, size) and the latest run's results.

Reads Parquet footers only, never the data, so listing a root of CIFAR-100 embeddings is quick,
and works on any fsspec URL, since every path goes through ``Location``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage import registry
from storage.fingerprint import hash_file
from storage.fs import TMP_MARKER, Location
from storage.integrity import FULL_HASH_MAX
from storage.layout import OutputLayout
from storage.manifest import MANIFEST_NAME, StageManifest, read_manifest
from storage.runs import RunRecord, read_latest
from storage.tables import SHARD_PREFIX, shard_names

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
    damaged: str | None = None  # "file: why", when a file does not read or match its manifest

    @property
    def folder(self) -> str:
        """``dataset/stage/key``: the stage folder relative to the output root."""
        return f"{self.dataset}/{self.stage}/{self.key}"


def _table_name(file_name: str, stage: str) -> str:
    """``overlap_pairs.parquet`` -> ``overlap_pairs``; shards ``part-*.parquet`` -> the stage."""
    return stage if file_name.startswith(SHARD_PREFIX) else file_name.removesuffix(".parquet")


def _latest_folders(record: RunRecord | None) -> set[str]:
    """``dataset/stage/key`` of every stage folder the run record used."""
    if not record:
        return set()
    return {"/".join(stage.url.rstrip("/").rsplit("/", 3)[-3:]) for stage in record.stages.values()}


def manifest_mismatch(
    folder: Location, file_name: str, size: int, manifest: StageManifest | None
) -> str | None:
    """``file: why`` when a file of ``size`` bytes differs from ``manifest``, its stage's
    (size; sha256 of small files); None when it matches or is not listed there.

    Never changes anything (a stage about to recompute removes its damaged files; inspecting
    does not), and never reads a big file in full: ``overlap verify`` does that.
    """
    record = manifest.files.get(file_name) if manifest else None
    if record is None:
        return None
    if size != record.bytes:
        return f"{file_name}: {size} bytes, its manifest says {record.bytes}"
    if size <= FULL_HASH_MAX and hash_file(folder, file_name) != record.sha256:
        return f"{file_name}: content differs from its manifest"
    return None


class DamagedFileError(ValueError):
    """A table of the latest run that does not read as the table it should be."""


def list_tables(url: str) -> list[TableInfo]:
    """Every Parquet table under ``OUT/<dataset>/<stage>/<key>/``, sorted by folder and name."""
    root = Location(url)
    fs, base = root.fs, root.path.rstrip("/")
    latest = _latest_folders(read_latest(OutputLayout(root)))
    found = fs.glob(posixpath.join(base, "*", "*", "*", "*.parquet"), detail=True)
    tables: dict[tuple[str, str], TableInfo] = {}
    manifests: dict[str, StageManifest | None] = {}
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
        try:
            with folder.open(file_name) as handle:
                parquet = pq.ParquetFile(handle)
                table.rows += parquet.metadata.num_rows
                table.schema = table.schema or parquet.schema_arrow
        except (OSError, ValueError) as error:  # pyarrow's errors for a file that is no Parquet
            table.damaged = table.damaged or f"{file_name}: {str(error).splitlines()[0]}"
        size = int(info.get("size") or folder.size(file_name))
        if folder.url not in manifests:  # once per folder, not once per shard
            manifests[folder.url] = read_manifest(folder)
        mismatch = manifest_mismatch(folder, file_name, size, manifests[folder.url])
        table.damaged = table.damaged or mismatch
        table.files.append(file_name)
        table.bytes += size
    _add_missing(root, latest, tables, manifests)
    return sorted(tables.values(), key=lambda t: (t.dataset, t.stage, t.key, t.name))


def _add_missing(
    root: Location,
    latest: set[str],
    tables: dict[tuple[str, str], TableInfo],
    manifests: dict[str, StageManifest | None],
) -> None:
    """Mark the tables whose files a stage's manifest lists but that are gone (a whole table, or
    one shard of a sharded one): a deleted file is damage too, not silence."""
    base = root.path.rstrip("/")
    present = {(k[0], f) for k, t in tables.items() for f in t.files}
    for path in sorted(root.fs.glob(posixpath.join(base, "*", "*", "*", MANIFEST_NAME))):
        relative = path.removeprefix(base).strip("/").rsplit("/", 1)[0]
        dataset, stage, key = relative.split("/")
        folder = root.child(dataset, stage, key)
        if folder.url not in manifests:
            manifests[folder.url] = read_manifest(folder)
        manifest = manifests[folder.url]
        for file_name in sorted(manifest.files if manifest else ()):
            if not file_name.endswith(".parquet") or (relative, file_name) in present:
                continue
            name = _table_name(file_name, stage)
            table = tables.setdefault(
                (relative, name),
                TableInfo(dataset, stage, key, name, folder.url, latest=relative in latest),
            )
            table.damaged = table.damaged or f"{file_name}: missing (its manifest lists it)"


def stage_folder(root: Location, record: RunRecord, stage: str) -> Location | None:
    """A stage folder of a run record: under ``root`` (which may have moved), else as recorded."""
    entry = record.stages.get(stage)
    if entry is None:
        return None
    recorded = entry.url.rstrip("/")
    moved = root.child(*recorded.rsplit("/", 3)[-3:])
    return moved if moved.exists() else Location(recorded)


def latest_table(
    root: Location, record: RunRecord, name: str, columns: list[str] | None = None
) -> pa.Table | None:
    """A registry table of a run record (e.g. ``overlap_pairs``), or None when the run did not
    write it; DamagedFileError when its file does not read."""
    spec = registry.table(name)
    folder = stage_folder(root, record, spec.stage)
    if folder is None:
        return None
    # a sharded table's file_name is the glob of its shards: look for one shard
    if not (shard_names(folder) if spec.sharded else folder.exists(spec.file_name)):
        return None
    try:
        return spec.read(folder, columns)
    except (OSError, ValueError) as error:
        url = folder.child(spec.file_name).url
        raise DamagedFileError(f"{url}: {str(error).splitlines()[0]}") from None


def _require(table: pa.Table, columns: list[str], folder: Location | None, name: str) -> None:
    """Raise DamagedFileError when a table lacks columns its stage always writes (swapped)."""
    missing = [c for c in columns if c not in table.column_names]
    if missing and folder is not None:
        url = folder.child(name).url
        raise DamagedFileError(
            f"{url}: no column {', '.join(missing)}; not the table its stage wrote"
        )


def top_overlap_pairs(root: Location, record: RunRecord, n: int) -> pa.Table | None:
    """The ``n`` flagged class pairs with the highest centroid cosine."""
    table = latest_table(root, record, "overlap_pairs")
    if table is None:
        return None
    columns = ["class_a", "class_b", "cosine", "z", "same_superclass"]
    _require(table, columns, stage_folder(root, record, "overlap"), "overlap_pairs.parquet")
    return table.sort_by([("cosine", "descending")]).slice(0, n).select(columns)


CONFUSION_COLUMNS = ["True", "Pred", "MisRate", "F1(True)", "F1(Pred)", "q_value", "flagged"]


def top_confusion(pairs: pa.Table, n: int | None) -> pa.Table:
    """The ``n`` flagged pairs of ``pairs`` (a confusion_pairs table) of highest MisRate; all
    pairs when none is flagged; ``n`` None: every one.

    Columns: True, Pred, MisRate, F1(True), F1(Pred), q_value, flagged (those present).
    """
    flagged = pairs.filter(pc.field("flagged"))
    table = (flagged if flagged.num_rows else pairs).sort_by([("MisRate", "descending")])
    return table.select([c for c in CONFUSION_COLUMNS if c in table.column_names]).slice(0, n)


def top_confusion_pairs(root: Location, record: RunRecord, n: int | None) -> pa.Table | None:
    """``top_confusion`` of the latest run's confusion_pairs table (None when it has none)."""
    table = latest_table(root, record, "confusion_pairs")
    if table is None:
        return None
    folder = stage_folder(root, record, "confusion")
    _require(table, CONFUSION_COLUMNS, folder, "confusion_pairs.parquet")
    return top_confusion(table, n)


def report_paths(root: Location, record: RunRecord) -> list[str]:
    """URLs of the latest run's reports (report.html, report.md, summary.md), when it wrote any."""
    paths = []
    for stage, entry in record.stages.items():
        folder = stage_folder(root, record, stage)
        for file_name in entry.tables:
            if file_name.endswith(REPORT_SUFFIXES) and folder is not None:
                paths.append(folder.child(file_name).url)
    return sorted(paths)
