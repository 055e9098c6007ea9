"""Stable content fingerprints for cache keys and manifests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from storage.fs import Location

SCHEMA_VERSION = "1"
_CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def hash_value(value: Any, length: int = 16) -> str:
    """Short sha256 of a JSON-able value."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def hash_array(array: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def hash_file(location: Location, name: str) -> str:
    """sha256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with location.open(name) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_local_file(path: Path) -> str:
    """sha256 of a local file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def code_version(*modules: Any) -> str:
    """Fingerprint of the given modules' (or source files') text plus the storage schema version.

    Prefect's TASK_SOURCE only sees a task's own text; hashing whole modules makes an edit to a
    helper function invalidate the cache too.
    """
    digest = hashlib.sha256(SCHEMA_VERSION.encode())
    for module in modules:
        path = module if isinstance(module, str | Path) else module.__file__
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]
