"""The embedding store: every embedding computed under an output root, keyed by image content.

One folder per model fingerprint (model, weights, preprocessing, precision, code version) under
``<out>/embedding_store/``; each file is an atomically written Parquet table of
(``content_hash``, ``embedding``). Files are only ever added, so concurrent runs can write side by
side, and a run killed mid-write leaves at most a temporary file that no reader trusts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from storage.fingerprint import hash_value
from storage.fs import TMP_MARKER, Location
from storage.layout import OutputLayout
from storage.tables import embedding_matrix, read_parquet, write_parquet

STORE_FOLDER = "embedding_store"
PREFIX = "vectors-"


def store_schema(dim: int) -> pa.Schema:
    """Schema of a store file: the image's sha256 and its L2-normalised float32 embedding."""
    return pa.schema(
        [
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.field("item", pa.float32(), nullable=False), dim)),
        ]
    )


def store_location(out: str, model_fingerprint: str) -> Location:
    """Folder of the store for one model fingerprint under output root ``out``."""
    return OutputLayout.at(out).root.child(STORE_FOLDER, model_fingerprint)


@dataclass
class EmbeddingStore:
    """Known embeddings of one model under one output root: content hash -> (file, row).

    The index holds only hashes; vectors are read from their files when asked for.
    """

    location: Location
    index: dict[str, tuple[str, int]] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, location: Location) -> EmbeddingStore:
        """The store at ``location`` with the index of every finished file in it."""
        store = cls(location)
        store.refresh()
        return store

    def refresh(self) -> None:
        """Index files written since the last look (by this or another process)."""
        for name in self.location.listdir():
            if name.startswith(PREFIX) and TMP_MARKER not in name and name not in self.files:
                self._index(name)

    def _index(self, name: str) -> None:
        hashes = read_parquet(self.location, name, ["content_hash"]).column(0).to_pylist()
        for row, digest in enumerate(hashes):
            self.index.setdefault(digest, (name, row))  # a hash written twice: the first wins
        self.files.add(name)

    def __contains__(self, digest: object) -> bool:
        return digest in self.index

    def __len__(self) -> int:
        return len(self.index)

    def vectors(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored vector of each of ``hashes`` (all must be known), reading each file once."""
        by_file: dict[str, list[tuple[str, int]]] = {}
        for digest in set(hashes):
            name, row = self.index[digest]
            by_file.setdefault(name, []).append((digest, row))
        found: dict[str, np.ndarray] = {}
        for name, wanted in by_file.items():
            table = read_parquet(self.location, name, ["embedding"])
            rows = table.take(pa.array([row for _, row in wanted], pa.int64()))
            matrix = embedding_matrix(rows)
            found.update((digest, matrix[i]) for i, (digest, _) in enumerate(wanted))
        return found

    def add(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store new embeddings in one file, named after its content, written atomically."""
        if not hashes:
            return
        dim = vectors.shape[1]
        flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1), pa.float32())
        column = pa.FixedSizeListArray.from_arrays(flat, dim)
        table = pa.table({"content_hash": pa.array(list(hashes), pa.string()), "embedding": column})
        name = f"{PREFIX}{hash_value(list(hashes), length=24)}.parquet"
        write_parquet(self.location, name, table, store_schema(dim))
        self._index(name)
