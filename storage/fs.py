"""A folder on any fsspec filesystem, with atomic writes."""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

TMP_MARKER = ".tmp-"
LOCAL_PROTOCOL = "file://"


def normalise_url(url: str) -> str:
    """One spelling per output location: stage keys hash it, so ``outputs/demo``,
    ``./outputs/demo/``, its absolute path and ``file://`` of it must name the same root.

    A local path becomes absolute, without ``.``/``..`` parts or a trailing slash (symbolic
    links are kept: the folder a user named); a URL loses its trailing slash.
    """
    if url.startswith(LOCAL_PROTOCOL):
        url = url.removeprefix(LOCAL_PROTOCOL)
    if "://" in url:
        protocol, _, rest = url.partition("://")
        return f"{protocol}://{rest.rstrip('/')}"
    return os.path.abspath(os.path.expanduser(url))


@dataclass(frozen=True)
class Location:
    """A folder given as a plain path or an fsspec URL (``s3://bucket/prefix``)."""

    url: str

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The filesystem behind the URL."""
        return fsspec.core.url_to_fs(self.url)[0]

    @property
    def path(self) -> str:
        """The path of the folder on its filesystem (no protocol)."""
        return fsspec.core.url_to_fs(self.url)[1]

    @property
    def is_local(self) -> bool:
        """True for a folder on this machine's disk."""
        return isinstance(self.fs, LocalFileSystem)

    def child(self, *parts: str) -> Location:
        """A location below this one."""
        return Location(posixpath.join(self.url.rstrip("/"), *parts))

    def file(self, name: str) -> str:
        """Full path (on ``fs``) of a file in this folder."""
        return posixpath.join(self.path, name)

    def refresh(self) -> None:
        """Forget cached listings of this folder: other processes (workers) may have written."""
        self.fs.invalidate_cache(self.path)

    def exists(self, name: str = "") -> bool:
        """True when this folder, or a file in it, exists."""
        self.refresh()
        return self.fs.exists(self.file(name) if name else self.path)

    def makedirs(self) -> None:
        """Create the folder if needed."""
        self.fs.makedirs(self.path, exist_ok=True)

    def listdir(self) -> list[str]:
        """File names in the folder (not recursive), sorted; [] when it does not exist."""
        if not self.exists():
            return []
        self.refresh()
        return sorted(
            posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self.path, detail=False)
        )

    def size(self, name: str) -> int:
        """Size in bytes of a file in this folder."""
        self.refresh()
        return int(self.fs.size(self.file(name)))

    def open(self, name: str, mode: str = "rb") -> IO[Any]:
        """Open a file in this folder."""
        self.refresh()  # a listing cached before another process rewrote it has the old size
        return self.fs.open(self.file(name), mode)

    @contextlib.contextmanager
    def atomic_open(self, name: str) -> Iterator[IO[bytes]]:
        """Write a file under a temporary name, then rename: readers never see half a file."""
        self.makedirs()
        final = self.file(name)
        tmp = self.file(f"{name}{TMP_MARKER}{uuid.uuid4().hex[:8]}")
        try:
            with self.fs.open(tmp, "wb") as handle:
                yield handle
            self.fs.mv(tmp, final)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm(tmp)
            raise

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a whole file atomically."""
        with self.atomic_open(name) as handle:
            handle.write(data)

    def read_bytes(self, name: str) -> bytes:
        """Read a whole file."""
        with self.open(name) as handle:
            return handle.read()

    def remove_tree(self) -> None:
        """Delete the folder and everything in it."""
        if self.exists():
            self.fs.rm(self.path, recursive=True)

    def remove_temporaries(self) -> list[str]:
        """Delete files left by interrupted atomic writes; return their names."""
        stale = [name for name in self.listdir() if TMP_MARKER in name]
        for name in stale:
            self.fs.rm(self.file(name))
        return stale

    def check_writable(self) -> None:
        """Raise a one-line error now, before any work, if this folder cannot be written."""
        probe = f".write-probe{TMP_MARKER}{uuid.uuid4().hex[:8]}"
        try:
            self.makedirs()
            with self.fs.open(self.file(probe), "wb") as handle:
                handle.write(b"ok")
            self.fs.rm(self.file(probe))
        except Exception as error:
            # fsspec back ends raise their own kinds: botocore's NoCredentialsError for a bucket
            # without credentials is not an OSError
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise PermissionError(
                f"cannot write to output location {self.url!r} ({reason}); "
                "choose another with --out"
            ) from None
