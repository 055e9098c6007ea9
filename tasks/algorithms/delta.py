"""Content-addressed reuse: which images need embedding, and a shard's vectors from known ones.

Pure functions: bytes, hashes and arrays in and out; the store that holds known embeddings is
``storage.embedding_store``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Mapping, Sequence

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
