"""Sources that are already sharded (Parquet files, WebDataset tars), read where they are.

A sharded source is used in three steps, each a plain function so that a cluster can map them:

1. ``list_shards``: the source's files with fingerprints (size plus ETag or modification time
   from fsspec ``info``), no data read;
2. indexing one shard (``parquet.index_shard``, ``webdataset.index_shard``): one row per image
   with its split, raw label and a *pointer* into the source, never the image bytes;
   ``combine`` then gives every row its ``sample_id``, ``label`` and ``class_name``;
3. ``read_pointed``: the bytes of some indexed rows, read from the source, for extraction.

Pointer columns (``storage.schemas.images.POINTER``): ``source_file`` (fsspec URL),
``source_row`` (row in the Parquet file, or sample number in the tar), ``source_member`` (the
tar member, or the Parquet column that holds the image), ``source_offset`` and ``source_size``
(the member's bytes in the tar; null for Parquet, whose bytes are found by row).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.escape import terminal
from storage.schemas.images import POINTER
from tasks.sources import DatasetError

log = logging.getLogger(__name__)

# what indexing one shard gives: split, the label as the source writes it, and the pointer
RAW_KEYS = ["split", "raw_label"]
# fsspec ``info`` keys that change when a file's content does, most specific first
VERSION_KEYS = ("ETag", "etag", "md5Hash", "mtime", "LastModified", "last_modified", "updated")
SPLIT_WORDS = {
    "train": "train",
    "test": "test",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
}
_BRACE_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}


class UnreadableShardError(OSError):
    """A shard that cannot be read as its format (truncated, corrupt): skipped with a warning."""


@dataclass(frozen=True)
class SourceShard:
    """One file of a sharded source: its URL and what identifies its content."""

    url: str
    size: int
    version: str

    @property
    def fingerprint(self) -> tuple[str, int, str]:
        """What the images stage's cache key hashes: a changed file changes the key."""
        return (self.url, self.size, self.version)


@dataclass
class ShardIndex:
    """Indexing one shard: its rows (``RAW_KEYS`` + ``POINTER``), class names it declares."""

    shard: SourceShard
    table: pa.Table | None
    class_names: list[str] | None = None
    error: str | None = None
    skipped: list[str] = field(default_factory=list)  # images that do not decode, by name


def _outer_brace(pattern: str) -> tuple[int, int, list[str]] | None:
    """Start and end of the first outermost ``{...}`` and its top-level comma parts."""
    depth, start, parts, last = 0, -1, [], 0
    for i, char in enumerate(pattern):
        if char == "{":
            if depth == 0:
                start, last = i, i + 1
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                return start, i, [*parts, pattern[last:i]]
        elif char == "," and depth == 1:
            parts.append(pattern[last:i])
            last = i + 1
    return None


def expand_braces(pattern: str) -> list[str]:
    """All strings of a brace pattern, left to right as WebDataset expands them.

    ``a-{000..002}.tar`` (zero-padded ranges), ``{train,test}.tar`` and nestings of both.
    """
    brace = _outer_brace(pattern)
    if brace is None:
        return [pattern]
    start, end, parts = brace
    head, tail = pattern[:start], pattern[end + 1 :]
    numbers = _BRACE_RANGE.match(parts[0]) if len(parts) == 1 else None
    if numbers:
        first, last = numbers.group(1), numbers.group(2)
        width = len(first) if first.startswith("0") and len(first) > 1 else 0
        step = 1 if int(last) >= int(first) else -1
        parts = [str(i).zfill(width) for i in range(int(first), int(last) + step, step)]
    return [e for part in parts for e in expand_braces(f"{head}{part}{tail}")]


def _version(info: dict[str, Any]) -> str:
    for key in VERSION_KEYS:
        if info.get(key) is not None:
            return f"{key}={info[key]}"
    return ""


def _is_credentials_error(error: BaseException) -> bool:
    chain: BaseException | None = error
    while chain is not None:
        if type(chain).__name__ in _CREDENTIAL_ERRORS:
            return True
        chain = chain.__cause__ or chain.__context__
    return False


def _access_error(url: str, error: BaseException) -> DatasetError:
    """One line for a source that cannot be listed: credentials, permissions or absence."""
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if _is_credentials_error(error):
        hint = (
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            if protocol in ("s3", "s3a")
            else f"set the credentials of the {protocol} filesystem"
        )
        return DatasetError(f"cannot read {url}: no credentials found; {hint}")
    if isinstance(error, PermissionError):
        return DatasetError(f"cannot read {url}: access denied ({error}); check its credentials")
    return DatasetError(f"cannot list {url} ({error}); check the path or URL")


def _matches(fs: fsspec.AbstractFileSystem, path: str, suffixes: tuple[str, ...]) -> list[str]:
    """Files of one (brace-expanded) path: itself, a folder's files with a suffix, or a glob."""
    if any(c in path for c in "*?["):
        return sorted(p for p in fs.glob(path) if fs.isfile(p))
    if fs.isdir(path):
        return sorted(p for p in fs.find(path) if p.lower().endswith(suffixes))
    return [path] if fs.exists(path) else []


def list_shards(spec: str, suffixes: tuple[str, ...], kind: str) -> list[SourceShard]:
    """The files of ``spec`` (path, folder, glob, brace pattern; local or fsspec URL), sorted.

    Only ``info`` is asked of each file, never its content. ``kind`` names the source in errors.
    """
    shards: list[SourceShard] = []
    seen: set[str] = set()
    for pattern in expand_braces(spec):
        try:
            fs, path = fsspec.core.url_to_fs(pattern)
            for found in _matches(fs, path, suffixes):
                url = fs.unstrip_protocol(found) if "://" in pattern else found
                if url in seen:
                    continue
                seen.add(url)
                info = fs.info(found)
                shards.append(SourceShard(url, int(info.get("size") or 0), _version(info)))
        except DatasetError:
            raise
        except Exception as error:  # botocore's credential errors are not OSErrors
            raise _access_error(pattern, error) from None
    if not shards:
        raise DatasetError(
            f"{kind}:{spec} matches no {'/'.join(s.lstrip('.') for s in suffixes)} files; "
            "pass a file, a folder, a glob or a brace pattern such as "
            f"shard-{{000..009}}{suffixes[0]}"
        )
    return shards


def read_class_names(url: str) -> list[str]:
    """Class names from a text file (local or fsspec URL), one per line, in label order."""
    try:
        with fsspec.open(url, "rt", encoding="utf-8") as handle:
            names = [line.strip() for line in handle if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read --class-names {url} ({error}); pass a text file") from None
    if len(set(names)) != len(names):
        raise DatasetError(f"--class-names {url} repeats a name; one distinct name per line")
    return names


def split_of_path(url: str) -> str:
    """The split a file's path names (``train``, ``test``, ``validation``), else ``train``.

    Hugging Face lays splits out as ``data/train-00000-of-00004.parquet`` or ``test/0000.parquet``;
    WebDataset shards are usually ``train-000000.tar``.
    """
    parts = url.split("://", 1)[-1].split("/")
    for part in reversed(parts):
        word = re.split(r"[-_.]", part.lower(), maxsplit=1)[0]
        if word in SPLIT_WORDS:
            return SPLIT_WORDS[word]
    return "train"


def pointer_columns(
    url: str,
    rows: Sequence[int],
    members: Sequence[str | None],
    offsets: Sequence[int | None],
    sizes: Sequence[int | None],
) -> dict[str, pa.Array]:
    """The ``POINTER`` columns for rows of one shard."""
    return {
        "source_file": pa.array([url] * len(rows), pa.string()),
        "source_row": pa.array(rows, pa.int64()),
        "source_member": pa.array(members, pa.string()),
        "source_offset": pa.array(offsets, pa.int64()),
        "source_size": pa.array(sizes, pa.int64()),
    }


def try_index(index: Callable[[SourceShard], ShardIndex], shard: SourceShard) -> ShardIndex:
    """``index(shard)``, or a ``ShardIndex`` that records why the shard could not be read."""
    try:
        return index(shard)
    except UnreadableShardError as error:
        log.warning("skipping unreadable shard %s: %s", terminal(shard.url), terminal(error))
        return ShardIndex(shard, None, error=str(error))


def _class_names(indexes: list[ShardIndex], given: list[str] | None) -> list[str] | None:
    """Class names from ``--class-names``, else the ones the files declare (all the same)."""
    if given:
        return list(given)
    declared = {tuple(i.class_names) for i in indexes if i.class_names}
    if len(declared) > 1:
        raise DatasetError(
            "the source's files declare different class names; pass --class-names FILE"
        )
    return list(declared.pop()) if declared else None


def _labels(raw: pa.ChunkedArray, names: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Integer labels 0..K-1 and their class names from the source's raw label column."""
    if pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type):
        values = np.asarray(raw.to_pylist(), dtype=object)
        names = names or sorted(set(values.tolist()))
        index = {name: i for i, name in enumerate(names)}
        unknown = sorted(set(values.tolist()) - index.keys())
        if unknown:
            raise DatasetError(
                f"labels {unknown[:5]} are not among the class names; fix --class-names"
            )
        return np.array([index[v] for v in values], dtype=np.int32), names
    values = np.asarray(raw.to_numpy(), dtype=np.int64)
    if names is None:  # integers without names: the numbers are the names
        distinct = np.unique(values)
        return np.searchsorted(distinct, values).astype(np.int32), [str(v) for v in distinct]
    bad = values[(values < 0) | (values >= len(names))]
    if len(bad):
        raise DatasetError(
            f"label {int(bad[0])} has no class name ({len(names)} names); fix --class-names"
        )
    return values.astype(np.int32), names


def combine(
    indexes: list[ShardIndex], kind: str, class_names: list[str] | None = None
) -> tuple[list[pa.Table], list[str], list[str]]:
    """One table per readable shard with ``sample_id``, ``label``, ``class_name`` and pointers.

    Rows: every image of the readable shards, in listing order; ``sample_id`` counts from 0 in
    that order. Columns: sample_id, split, label, class_name, then ``POINTER``. Also returns the
    class names and what was skipped: the URLs of unreadable shards, then the names of images
    that do not decode; refuses when no shard could be read or the shards hold no image.
    """
    readable = [i for i in indexes if i.table is not None and i.table.num_rows]
    skipped = [i.shard.url for i in indexes if i.table is None]
    skipped += [name for i in indexes for name in i.skipped]
    if not readable and indexes and not any(i.table is None for i in indexes):
        dropped = f", {len(skipped)} undecodable" if skipped else ""
        raise DatasetError(
            f"{kind}: the {len(indexes)} shard(s) hold no images (0 rows{dropped}); "
            "check the source"
        )
    if not readable:
        raise DatasetError(
            f"{kind}: none of the {len(indexes)} shard(s) could be read "
            f"({indexes[0].error if indexes else 'no shards'}); check the files"
        )
    types = {i.table.schema.field("raw_label").type for i in readable}
    if len(types) > 1:
        raise DatasetError(f"{kind}: the shards' labels mix types {sorted(map(str, types))}")
    raw = pa.chunked_array([i.table.column("raw_label") for i in readable])
    labels, names = _labels(raw, _class_names(readable, class_names))
    out, start = [], 0
    for index in readable:
        n = index.table.num_rows
        part = labels[start : start + n]
        columns = {
            "sample_id": pa.array(np.arange(start, start + n), pa.int64()),
            "split": index.table.column("split"),
            "label": pa.array(part, pa.int32()),
            "class_name": pa.array(np.asarray(names, dtype=object)[part].tolist(), pa.string()),
        }
        columns.update({f.name: index.table.column(f.name) for f in POINTER})
        out.append(pa.table(columns))
        start += n
    return out, names, skipped


def source_paths(table: pa.Table) -> list[str]:
    """Where each row's image is: the tar member, or ``file#row`` of a Parquet row."""
    members = table.column("source_member").to_pylist()
    offsets = table.column("source_offset").to_pylist()
    files = table.column("source_file").to_pylist()
    rows = table.column("source_row").to_pylist()
    return [
        member if offset is not None else f"{file.rsplit('/', 1)[-1]}#{row}"
        for member, offset, file, row in zip(members, offsets, files, rows, strict=True)
    ]


CHECK_ROWS = 512  # images read and decoded at a time when a shard is checked


def without_undecodable(index: ShardIndex, problem: Callable[[bytes], str | None]) -> ShardIndex:
    """``index`` without the rows whose image bytes ``problem`` refuses (a reason, else None);
    their names (``source_paths``) in ``skipped``, each warned."""
    if index.table is None or index.table.num_rows == 0:
        return index
    keep: list[int] = []
    skipped = list(index.skipped)
    pointers = index.table.select([f.name for f in POINTER])
    for start in range(0, pointers.num_rows, CHECK_ROWS):
        rows = pointers.slice(start, CHECK_ROWS)
        for offset, (name, data) in enumerate(
            zip(source_paths(rows), read_pointed(rows), strict=True)
        ):
            if (why := problem(data)) is None:
                keep.append(start + offset)
            else:
                where = terminal(index.shard.url)
                log.warning("skipping image %s of %s: %s", terminal(name), where, terminal(why))
                skipped.append(name)
    table = index.table.take(pa.array(keep, pa.int64()))
    return ShardIndex(index.shard, table, index.class_names, index.error, skipped)


def _read_ranges(fs: fsspec.AbstractFileSystem, path: str, rows: pa.Table) -> list[bytes]:
    """Bytes at (offset, size) in one file, in the rows' order; one open, reads in file order."""
    offsets = rows.column("source_offset").to_numpy()
    sizes = rows.column("source_size").to_numpy()
    out: list[bytes] = [b""] * len(offsets)
    with fs.open(path, "rb") as handle:
        for i in np.argsort(offsets, kind="stable"):
            handle.seek(int(offsets[i]))
            out[i] = handle.read(int(sizes[i]))
    return out


def _read_parquet_rows(fs: fsspec.AbstractFileSystem, path: str, rows: pa.Table) -> list[bytes]:
    """Image bytes of some rows of one Parquet file: only their row groups, only that column."""
    column = rows.column("source_member")[0].as_py()
    wanted = rows.column("source_row").to_numpy()
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        counts = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
        bounds = np.cumsum([0, *counts])
        group_of = np.searchsorted(bounds, wanted, side="right") - 1
        groups = np.unique(group_of)
        table = parquet.read_row_groups(groups.tolist(), columns=[column])
    # where each group read starts in ``table``: the groups laid end to end
    starts = np.concatenate([[0], np.cumsum(bounds[groups + 1] - bounds[groups])[:-1]])
    local = starts[np.searchsorted(groups, group_of)] + wanted - bounds[group_of]
    values = table.column(column).combine_chunks().take(pa.array(local, pa.int64()))
    if pa.types.is_struct(values.type):
        values = values.field("bytes")
    if values.null_count:
        raise DatasetError(f"{path}: rows of column {column!r} hold no image bytes")
    return values.to_pylist()


def read_pointed(pointers: pa.Table) -> list[bytes]:
    """The image bytes of indexed rows (``POINTER`` columns), in the rows' order.

    Rows are grouped by file, so each source file is opened once: a tar member is read by its
    offset and size, a Parquet row from its row group.
    """
    out: list[bytes] = [b""] * pointers.num_rows
    files = pointers.column("source_file").to_numpy(zero_copy_only=False)
    for url in dict.fromkeys(files.tolist()):
        positions = np.flatnonzero(files == url)
        rows = pointers.take(pa.array(positions, pa.int64()))
        fs, path = fsspec.core.url_to_fs(url)
        by_range = pc.all(pc.is_valid(rows.column("source_offset"))).as_py()
        data = _read_ranges(fs, path, rows) if by_range else _read_parquet_rows(fs, path, rows)
        for position, value in zip(positions, data, strict=True):
            out[position] = value
    return out
