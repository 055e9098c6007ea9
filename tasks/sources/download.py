"""Fetch one archive over http(s), ftp or file:// with a read timeout; sweep dead temporaries.

torchvision's downloader opens URLs without a timeout, so a mirror that stops sending keeps a
run waiting forever; this one gives up after ``timeout`` seconds without data, which the load
task counts as transient and retries.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from tasks.sources import DatasetError

# Seconds without a byte before a download counts as stalled (each retry starts afresh).
READ_TIMEOUT_SECONDS = 60.0
TEMP_PREFIX = ".download-"
CHUNK = 1 << 20


class DownloadError(OSError):
    """A download that failed (network, mirror, stall): retried unless the cause is a 4xx answer."""


class ChecksumError(OSError):
    """A downloaded file whose md5 does not match: retried, since downloads break."""


def failure_reason(error: OSError) -> str:
    """Why a download failed, in a few words ("HTTP Error 503: ...", "timed out")."""
    if isinstance(error, urllib.error.HTTPError):
        return str(error)
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


class UnusableURLError(DatasetError):
    """A URL that cannot succeed on a retry (a missing file://, no host): fails at once."""


def check_url(url: str) -> None:
    """Raise UnusableURLError for a URL no retry can mend; cheap, no network."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(url2pathname(parsed.path))
        if not path.is_file():
            raise UnusableURLError(f"{url}: no such file")
    elif not parsed.hostname:
        raise UnusableURLError(f"{url}: the URL names no host")


def fetch(url: str, target: Path, timeout: float | None = None) -> None:
    """Write the bytes at ``url`` to ``target``; OSError (timeouts included) when the read fails.

    ``timeout``: seconds without data before giving up; default READ_TIMEOUT_SECONDS.
    """
    check_url(url)
    request = urllib.request.Request(url, headers={"User-Agent": "class-overlap"})
    seconds = READ_TIMEOUT_SECONDS if timeout is None else timeout
    with urllib.request.urlopen(request, timeout=seconds) as response, target.open("wb") as out:
        shutil.copyfileobj(response, out, CHUNK)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_temporaries(root: Path) -> list[str]:
    """Remove download folders of processes that died (killed runs); return their names.

    A folder is named after its process id, so a download running now in another process is
    left alone.
    """
    removed = []
    for folder in Path(root).glob(f"{TEMP_PREFIX}*"):
        pid = folder.name.removeprefix(TEMP_PREFIX).split("-", 1)[0]
        if folder.is_dir() and not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


@contextlib.contextmanager
def download_folder(root: Path) -> Iterator[Path]:
    """A temporary folder under ``root``, removed on every exit; swept later if the process dies."""
    root.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(root)
    with tempfile.TemporaryDirectory(dir=root, prefix=f"{TEMP_PREFIX}{os.getpid()}-") as tmp:
        yield Path(tmp)
