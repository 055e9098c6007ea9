"""The embedding store: every embedding computed under an output root, keyed by image content.

One folder per model fingerprint (model, weights, preprocessing, precision, code version) under
``<out>/embedding_store/``; each file is an atomically written Parquet table of
(``content_hash``, ``embedding``), listed in the folder's manifest like any stage's files.

The store is checked as a stage output is: a listed file that is missing, resized or changed
(same-size damage included, at the cost of ``StageManifest.damage``) or that no longer reads is
dropped, with one warning naming it, and its images count as never embedded. Writers take a lock
on the folder (local disks), re-read the manifest under it and write only contents nobody stored
meanwhile, so concurrent runs never store one content twice; files a killed writer left (a
temporary file, a file it renamed but did not list) are removed under the same lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from storage.fingerprint import hash_value
from storage.fs import TMP_MARKER, Location
from storage.layout import OutputLayout
from storage.manifest import (
    MANIFEST_NAME,
    StageManifest,
    file_problem,
    read_manifest,
    record_file,
    write_manifest,
)
from storage.tables import embedding_matrix, read_parquet, write_parquet

STORE_FOLDER = "embedding_store"
PREFIX = "vectors-"
LOCK_NAME = ".store.lock"

log = logging.getLogger(__name__)


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


def store_manifests(root: Location) -> list[Location]:
    """Every store folder under output root ``root`` that holds a manifest, sorted."""
    stores = root.child(STORE_FOLDER)
    return [
        stores.child(name) for name in stores.listdir() if stores.child(name).exists(MANIFEST_NAME)
    ]


@contextlib.contextmanager
def locked(location: Location) -> Iterator[None]:
    """Hold the store folder's lock: an flock, released by the kernel if the holder dies.

    Object stores have no locks: there, concurrent writers may still store a content twice
    (readers take the first), never a wrong vector.
    """
    if not location.is_local:
        yield
        return
    location.makedirs()
    with open(location.file(LOCK_NAME), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _empty_manifest(location: Location) -> StageManifest:
    key = location.path.rstrip("/").rsplit("/", 1)[-1]
    return StageManifest(stage=STORE_FOLDER, key=key, url=location.url, code_version="")


@dataclass
class EmbeddingStore:
    """Known embeddings of one model under one output root: content hash -> (file, row).

    The index holds only hashes; vectors are read from their files when asked for. ``warn``
    receives one line per dropped file.
    """

    location: Location
    warn: Callable[[str], None] = log.warning
    index: dict[str, tuple[str, int]] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)
    _lock_depth: int = 0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The folder's lock, re-entrant within this store (a second flock would wait on ours)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        with locked(self.location):
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0

    @classmethod
    def open(cls, location: Location, warn: Callable[[str], None] | None = None) -> EmbeddingStore:
        """The store at ``location``: leftovers of killed writers removed, every listed file
        checked, the intact ones indexed."""
        store = cls(location, warn or log.warning)
        with store._locked():
            unlisted = [name for name in store.sweep() if TMP_MARKER not in name]
        if unlisted:
            store.warn(
                f"embedding store: removed {len(unlisted)} file(s) of {location.url} that its "
                f"manifest does not list ({', '.join(unlisted[:3])}"
                f"{' ...' if len(unlisted) > 3 else ''}: written before the store had a manifest, "
                "or by a writer killed before listing them); their images are embedded again"
            )
        store.refresh()
        return store

    def manifest(self) -> StageManifest:
        """The store's manifest as it is now (an empty one before the first file)."""
        return read_manifest(self.location) or _empty_manifest(self.location)

    def sweep(self) -> list[str]:
        """Remove temporary files and store files no manifest lists (a writer killed between
        its rename and its manifest); hold the lock. Returns their names."""
        listed = set(self.manifest().files)
        stale = [
            name
            for name in self.location.listdir()
            if TMP_MARKER in name or (name.startswith(PREFIX) and name not in listed)
        ]
        for name in stale:
            self.location.fs.rm(self.location.file(name))
        return stale

    def refresh(self) -> None:
        """Check and index files listed since the last look (by this or another process)."""
        manifest = self.manifest()
        found = set(self.location.listdir())
        for name, record in sorted(manifest.files.items()):
            if name in self.files:
                continue
            problem, _fresh = file_problem(self.location, name, record, found)
            if problem is None:
                problem = self._index(name)
            if problem is not None:
                self._drop(name, problem)

    def _index(self, name: str) -> str | None:
        """Index one file's hashes; why it cannot be read, or None."""
        try:
            hashes = read_parquet(self.location, name, ["content_hash"]).column(0).to_pylist()
        except Exception as error:  # an intact-looking file that no longer parses
            return f"{name} does not read ({type(error).__name__})"
        for row, digest in enumerate(hashes):
            self.index.setdefault(digest, (name, row))  # a hash written twice: the first wins
        self.files.add(name)
        return None

    def _drop(self, name: str, why: str) -> None:
        """Remove a damaged file and its manifest entry; its images are embedded again."""
        with self._locked():
            manifest = self.manifest()
            if manifest.files.pop(name, None) is not None:
                write_manifest(manifest)
                with contextlib.suppress(FileNotFoundError):
                    self.location.fs.rm(self.location.file(name))
                self.warn(
                    f"embedding store: dropped {self.location.file(name)} ({why}); "
                    "its images are embedded again"
                )

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

    def add(self, hashes: Sequence[str], vectors: np.ndarray) -> int:
        """Store the embeddings no run stored yet in one file, named after its content, written
        atomically and then listed in the manifest; return how many were stored."""
        with self._locked():
            self.refresh()  # another run may have stored some of these since we looked
            keep = [i for i, digest in enumerate(hashes) if digest not in self.index]
            if not keep:
                return 0
            kept = [hashes[i] for i in keep]
            dim = vectors.shape[1]
            flat = np.ascontiguousarray(vectors[keep], np.float32).reshape(-1)
            column = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
            table = pa.table({"content_hash": pa.array(kept, pa.string()), "embedding": column})
            name = f"{PREFIX}{hash_value(kept, length=24)}.parquet"
            write_parquet(self.location, name, table, store_schema(dim))
            manifest = self.manifest()
            manifest.files[name] = record_file(self.location, name, len(kept))
            write_manifest(manifest)
            self._index(name)
            return len(kept)
