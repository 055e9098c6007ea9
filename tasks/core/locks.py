"""A Prefect lock manager on flock(2): concurrent runs on one machine compute a stage once.

Prefect's ``FileSystemLockManager`` marks a lock by a file's existence, so a run killed while
holding one (SIGKILL, OOM, a lost machine) leaves it held forever and every later run with the same
cache key waits for good. A ``flock`` belongs to an open file: the kernel releases it when the
holding process dies, however it dies. Local filesystems only (as the default result storage).
"""

from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path
from typing import IO, Any

import anyio
from prefect.locking.protocol import LockManager

POLL_SECONDS = 0.1


class FlockLockManager(LockManager):
    """Exclusive locks per cache key, as ``flock``-ed files in one folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).expanduser()
        self._held: dict[str, tuple[str, IO[Any]]] = {}  # key -> (holder, open lock file)
        self._mutex = threading.Lock()

    def __deepcopy__(self, memo: dict) -> FlockLockManager:
        return self  # one manager per folder: copies of a cache policy share its locks

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory}  # a pickled copy (another process) holds nothing

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"])

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.lock"

    def _try_lock(self, key: str) -> IO[Any] | None:
        """The open, exclusively locked file of ``key``, or None when another holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = self._path(key).open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,  # a flock lasts as long as its process; no expiry
    ) -> bool:
        """Wait (up to ``acquire_timeout`` seconds, None: for ever) for the lock of ``key``."""
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while True:
            with self._mutex:
                if self.is_lock_holder(key, holder):
                    return True
                if key not in self._held and (handle := self._try_lock(key)) is not None:
                    self._held[key] = (holder, handle)
                    return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)

    async def aacquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        """``acquire_lock`` in a worker thread."""
        return await anyio.to_thread.run_sync(
            self.acquire_lock, key, holder, acquire_timeout, hold_timeout
        )

    def release_lock(self, key: str, holder: str) -> None:
        """Release a lock this holder took."""
        with self._mutex:
            if not self.is_lock_holder(key, holder):
                raise ValueError(f"no lock held by {holder} for transaction with key {key}")
            _holder, handle = self._held.pop(key)
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def is_locked(self, key: str) -> bool:
        """True while this or any other process holds the lock of ``key``."""
        if key in self._held:
            return True
        if not self._path(key).exists():
            return False
        handle = self._try_lock(key)
        if handle is None:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
        return False

    def is_lock_holder(self, key: str, holder: str) -> bool:
        """True when ``holder`` holds the lock of ``key`` in this process."""
        held = self._held.get(key)
        return held is not None and held[0] == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """Wait until nobody holds the lock of ``key``; False if ``timeout`` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """``wait_for_lock`` without blocking the event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await anyio.sleep(POLL_SECONDS)
        return True
