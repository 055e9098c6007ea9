"""Stable content fingerprints for cache keys and manifests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, BinaryIO

from storage.fs import Location

SCHEMA_VERSION = "1"
_CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def hash_value(value: Any, length: int = 16) -> str:
    """Short sha256 of a JSON-able value."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def _hash_stream(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def hash_file(location: Location, name: str) -> str:
    """sha256 of a file's bytes, streamed."""
    with location.open(name) as handle:
        return _hash_stream(handle)


def hash_local_file(path: Path) -> str:
    """sha256 of a local file, streamed."""
    with path.open("rb") as handle:
        return _hash_stream(handle)
