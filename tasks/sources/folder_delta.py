"""An image folder loaded again: files unchanged since the last load (same path, size and
modification time) take their bytes and hashes from the last images table instead of the disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from storage.file_index import FILE_INDEX, INDEX_NAME, last_load, read_index, write_index
from storage.fs import Location
from storage.manifest import StageManifest
from storage.tables import read_parquet, shard_name
from tasks.algorithms.delta import FileStat, FolderDelta, content_hash, folder_delta
from tasks.core.dataset_kinds import argument_of
from tasks.sources.imagefolder import ImageFile, ImageFolderSource

if TYPE_CHECKING:
    from tasks.core.params import ImagesParams


def stat_files(root: os.PathLike[str] | str, files: list[ImageFile]) -> list[FileStat]:
    """Relative path, size and modification time (ns) of each file, in order."""
    stats = []
    for item in files:
        stat = item.path.stat()
        stats.append(FileStat(os.path.relpath(item.path, root), stat.st_size, stat.st_mtime_ns))
    return stats


@dataclass
class _Earlier:
    """The last load's file index (path -> row of it) and its images shards, one read at a time."""

    manifest: StageManifest
    rows: dict[str, dict] = field(init=False)
    _shard: tuple[str, list[bytes]] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.rows = {row["path"]: row for row in read_index(self.manifest).to_pylist()}

    def stats(self) -> dict[str, tuple[int, int]]:
        return {path: (row["size"], row["mtime_ns"]) for path, row in self.rows.items()}

    def image(self, path: str) -> bytes:
        """The stored bytes of ``path`` in the last images table."""
        row = self.rows[path]
        if self._shard is None or self._shard[0] != row["shard"]:  # scan order: shard by shard
            table = read_parquet(self.manifest.location, row["shard"], ["image"])
            self._shard = (
                row["shard"],
                table.column("image").combine_chunks().field("bytes").to_pylist(),
            )
        return self._shard[1][row["row"]]


@dataclass
class ReusingImageFolderSource(ImageFolderSource):
    """``ImageFolderSource`` that reads only files new or changed since ``previous`` (a finished
    images manifest with a file index); with None it reads every file (a first load, --rescan).
    After ``chunks`` is consumed, ``delta`` says what changed and ``index`` is the new file index.
    """

    previous: StageManifest | None = None
    delta: FolderDelta | None = field(default=None, init=False)
    index: list[dict] = field(default_factory=list, init=False)

    def chunks(self, rows: int) -> Iterator[pa.Table]:
        """Like ``ImageFolderSource.chunks``; unchanged files come from the last images table."""
        earlier = _Earlier(self.previous) if self.previous is not None else None
        stats = stat_files(self.root, self.files)  # before reading: a later edit is seen next time
        self.delta = folder_delta(stats, earlier.stats() if earlier else {})
        return self._batched(self._indexed_samples(stats, earlier, rows), rows)

    def _indexed_samples(
        self, stats: list[FileStat], earlier: _Earlier | None, rows: int
    ) -> Iterator[tuple[int, ImageFile, bytes]]:
        """Each readable file's sample, recording its row of the file index as it goes."""
        unchanged = set(self.delta.unchanged) if self.delta else set()
        for sample_id, (item, stat) in enumerate(zip(self.files, stats, strict=True)):
            if earlier is not None and stat.path in unchanged:
                data, digest = earlier.image(stat.path), earlier.rows[stat.path]["content_hash"]
            elif (data := self._read(item)) is not None:
                digest = content_hash(data)
            else:
                continue
            position = len(self.index)  # the sample's place in the shards being written
            shard, row = shard_name(position // rows), position % rows
            self.index.append({**vars(stat), "content_hash": digest, "shard": shard, "row": row})
            yield sample_id, item, data

    def write_index(self, target: Location) -> dict[str, int]:
        """Write the file index next to the shards; return it as ``Output.written`` wants it."""
        return {INDEX_NAME: write_index(target, pa.Table.from_pylist(self.index, FILE_INDEX))}


def open_dataset(params: ImagesParams, name: str) -> ReusingImageFolderSource:
    """The image folder ``imagefolder:PATH`` names (``tasks.core.dataset_kinds``)."""
    # unchanged files come from the last load's table; --rescan reads every file again
    previous = None if params.rescan else last_load(params.out, params.dataset)
    return ReusingImageFolderSource(
        Path(argument_of(params.dataset)).expanduser(),
        max_pixels=params.max_image_pixels or None,
        previous=previous,
    )
