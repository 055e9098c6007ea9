"""Cheap content checks of a stage's files, run on every cache hit.

A size check alone trusts a file whose bytes changed in place. Hashing every byte on every cache
hit costs a full read of the outputs (hundreds of MB for CIFAR-100's images and embeddings). So:

- files up to ``FULL_HASH_MAX`` bytes (every table but images, subsets and embedding shards) are
  hashed in full on each check;
- larger files are checked by size, modification time and a *sampled* hash: the Parquet footer
  (the last ``SAMPLE_BLOCK`` bytes) plus ``SAMPLE_COUNT`` evenly spaced blocks. A modification
  time that differs from the recorded one (anything that wrote to the file) triggers a full
  re-hash; the sample catches a damaged footer, a swapped file and changes in the sampled ranges
  even when the modification time was put back.

``overlap verify OUT`` (``StageManifest.verify_hashes``) reads every byte on demand.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from storage.fingerprint import hash_file
from storage.fs import Location

FULL_HASH_MAX = 4 * 1024 * 1024  # measured: README "What the tool guarantees"
SAMPLE_BLOCK = 64 * 1024
SAMPLE_COUNT = 16


def sample_offsets(size: int) -> list[int]:
    """Start offsets of the sampled blocks: evenly spaced, always the file's last block (footer)."""
    block, count = SAMPLE_BLOCK, SAMPLE_COUNT
    if size <= block:
        return [0]
    last = size - block
    return sorted({round(i * last / count) for i in range(count)} | {last})


def sampled_hash(location: Location, name: str, size: int) -> str:
    """sha256 of a file's size and sampled blocks: a few reads, never the whole file."""
    digest = hashlib.sha256(str(size).encode())
    with location.open(name) as handle:
        for offset in sample_offsets(size):
            handle.seek(offset)
            digest.update(handle.read(SAMPLE_BLOCK))
    return digest.hexdigest()


def modified(location: Location, name: str) -> str | None:
    """The file's modification time as text, or None where the filesystem does not say."""
    try:
        return location.fs.modified(location.file(name)).isoformat()
    except (NotImplementedError, AttributeError, KeyError):
        return None


@dataclass(frozen=True)
class Stamp:
    """What the cheap check compares: recorded at write time, next to size and sha256."""

    mtime: str | None
    sample: str | None


def stamp(location: Location, name: str, size: int) -> Stamp:
    """Modification time and sampled hash of a big file (None, None for a small one)."""
    if size <= FULL_HASH_MAX:
        return Stamp(None, None)
    return Stamp(modified(location, name), sampled_hash(location, name, size))


def content_problem(
    location: Location, name: str, size: int, sha256: str, recorded: Stamp
) -> tuple[str | None, Stamp | None]:
    """Why a file of the recorded size no longer has the recorded content (None when it has).

    Also returns a fresh stamp when the file was re-hashed in full and found intact under a new
    modification time (a copied output root), so the caller can record it and skip the re-hash
    next time; else None.
    """
    if size <= FULL_HASH_MAX:
        return (None if hash_file(location, name) == sha256 else f"{name} changed content"), None
    if recorded.sample is not None and sampled_hash(location, name, size) != recorded.sample:
        return f"{name} changed content", None
    now = modified(location, name)
    if recorded.mtime is not None and now == recorded.mtime:
        return None, None
    # written since it was recorded (or recorded before stamps existed): read every byte once
    if hash_file(location, name) != sha256:
        return f"{name} changed content", None
    return None, Stamp(now, recorded.sample or sampled_hash(location, name, size))
