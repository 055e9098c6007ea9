"""Content-addressed reuse: which images need embedding, and a shard's vectors from known ones.

Pure functions: bytes, hashes and arrays in and out; the store that holds known embeddings is
``storage.embedding_store``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def content_hash(data: bytes) -> str:
    """sha256 (hex) of an image's stored bytes: its identity, whatever its path, label or id."""
    return hashlib.sha256(data).hexdigest()


def content_hashes(images: Sequence[bytes]) -> list[str]:
    """``content_hash`` of each image, in order."""
    return [content_hash(data) for data in images]


def unseen(hashes: Sequence[str], known: Container[str]) -> list[int]:
    """Row indices of the first occurrence of each hash not in ``known``, in row order.

    An image present twice (same bytes) is embedded once.
    """
    first: dict[str, int] = {}
    for row, digest in enumerate(hashes):
        if digest not in known and digest not in first:
            first[digest] = row
    return list(first.values())


def assemble(hashes: Sequence[str], vectors: Mapping[str, np.ndarray], dim: int) -> np.ndarray:
    """A (rows, dim) float32 matrix: row i is the vector of ``hashes[i]``; KeyError if one is
    missing (a caller's bug: every hash must be known or just embedded)."""
    out = np.empty((len(hashes), dim), dtype=np.float32)
    for row, digest in enumerate(hashes):
        out[row] = vectors[digest]
    return out


@dataclass(frozen=True)
class FileStat:
    """A file as a listing sees it: relative path, size and modification time."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FolderDelta:
    """How a folder changed since its last load: paths new, changed, removed, and unchanged."""

    new: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: list[str]

    def counts(self) -> dict[str, int]:
        """Number of files in each group, for the manifest, the log and the run record."""
        return {
            "new": len(self.new),
            "changed": len(self.changed),
            "removed": len(self.removed),
            "unchanged": len(self.unchanged),
        }


def folder_delta(
    current: Sequence[FileStat], previous: Mapping[str, tuple[int, int]]
) -> FolderDelta:
    """Compare a listing with the last load's (path -> (size, mtime_ns)); same stat = unchanged."""
    new, changed, unchanged = [], [], []
    for item in current:
        before = previous.get(item.path)
        if before is None:
            new.append(item.path)
        elif before == (item.size, item.mtime_ns):
            unchanged.append(item.path)
        else:
            changed.append(item.path)
    seen = {item.path for item in current}
    removed = [path for path in previous if path not in seen]
    return FolderDelta(new, changed, removed, unchanged)


def rerun_summary(
    images_info: Mapping, embeddings_info: Mapping, flow_run: str | None
) -> dict[str, int]:
    """What this images version changed since the last load and what this run's extraction did.

    Keys: ``new``, ``changed``, ``removed``, ``unchanged`` (files, image folders only) and
    ``embedded``, ``reused``, ``cached`` (images: see ``tasks.models.reuse.Reuse``); a key is
    absent when its stage did not record it. Embeddings computed by another flow run than
    ``flow_run`` (a cache hit) count as cached: this run embedded and reused none of them.
    """
    summary = dict(images_info.get("files") or {})
    if "embedded" not in embeddings_info:
        return summary
    if embeddings_info.get("flow_run") != flow_run:
        return summary | {"embedded": 0, "reused": 0, "cached": embeddings_info["rows"]}
    for name in ("embedded", "reused", "cached"):
        summary[name] = embeddings_info.get(name, 0)
    return summary
