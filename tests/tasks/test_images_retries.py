"""Retries against a flaky download: the real load task through the Prefect engine.

A CIFAR-100 archive in the official format is served from 127.0.0.1 by a mirror that fails its
first requests; ``--download-url`` points the load task at it. Retry delays are shortened (the
same exponential shape as the task's own, 10x faster); everything else is the task as shipped.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.tasks import exponential_backoff

from flows.config import RunConfig
from storage.manifest import StageManifest
from tasks.images import images_task, transient
from tasks.sources import DatasetError, cifar, download
from tests.support.cifar_fixture import cifar100_archive, write_cifar100
from tests.support.http_fixture import serve_file

pytestmark = pytest.mark.usefixtures("prefect_server")

DELAYS = [0.2, 0.4, 0.8]  # exponential_backoff(backoff_factor=0.2): the task's shape, shortened


@flow(name="load only")
def load_only(config: RunConfig) -> StageManifest:
    """The load task as shipped, with shorter retry delays and no jitter (timings are checked)."""
    fast = images_task.with_options(
        retry_delay_seconds=exponential_backoff(backoff_factor=0.2), retry_jitter_factor=None
    )
    return fast(config)


def load(config: RunConfig) -> tuple[object, int]:
    """Run the load task in a flow: its result or exception, and how many attempts it made."""
    state = load_only(config, return_state=True)
    with get_client(sync_client=True) as client:
        (task_run,) = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    return state.result(raise_on_failure=False), task_run.run_count


@pytest.fixture
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small cifar-100-python.tar.gz; its md5 stands in for the official one."""
    path = cifar100_archive(write_cifar100(tmp_path / "src"), tmp_path / "cifar-100-python.tar.gz")
    monkeypatch.setattr(
        cifar.VARIANTS["cifar100"], "tgz_md5", hashlib.md5(path.read_bytes()).hexdigest()
    )
    return path


def _config(tmp_path: Path, url: str) -> RunConfig:
    return RunConfig(
        dataset="cifar100",
        data_dir=str(tmp_path / "data"),
        out=str(tmp_path / "out"),
        download_url=url,
    )


def _leftovers(data_dir: Path) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir()) if data_dir.exists() else []


def test_the_task_retries_transient_errors_with_exponential_backoff() -> None:
    assert images_task.retries == 3
    assert images_task.retry_delay_seconds == [2, 4, 8]
    assert images_task.retry_jitter_factor == 0.5
    assert images_task.retry_condition_fn is transient


def test_a_flaky_mirror_is_retried_with_backoff_until_it_answers(tmp_path: Path, archive) -> None:
    with serve_file(archive, failures=2) as mirror:
        manifest, attempts = load(_config(tmp_path, mirror["url"]))
    assert isinstance(manifest, StageManifest), manifest
    assert attempts == 3
    assert mirror["requests"] == 3  # two refused requests, then the download itself
    gaps = np.diff(mirror["times"][:3])
    assert gaps[0] >= DELAYS[0] and gaps[1] >= DELAYS[1], gaps  # waited, and longer each time
    assert manifest.info["rows"] == 84 and manifest.info["class_names"][:2] == ["apple", "bear"]
    assert _leftovers(tmp_path / "data") == ["cifar-100-python"]


def test_a_mirror_that_keeps_failing_ends_in_one_clear_error(tmp_path: Path, archive) -> None:
    with serve_file(archive, failures=1000) as mirror:
        error, attempts = load(_config(tmp_path, mirror["url"]))
    assert attempts == 4 and mirror["requests"] == 4  # the first try and three retries
    assert isinstance(error, OSError)
    assert str(error) == (
        f"could not download cifar100 from {mirror['url']} (HTTP Error 503: flaky mirror); "
        "check the network, use --download-url MIRROR, or put cifar-100-python/ in --data-dir"
    )
    assert _leftovers(tmp_path / "data") == []  # no archive, no half-extracted folder
    assert not (tmp_path / "out" / "cifar100").exists() or not any(
        (tmp_path / "out" / "cifar100").rglob("*.parquet")
    )


def test_an_archive_failing_its_checksum_is_retried_then_refused(tmp_path: Path, archive) -> None:
    wrong = tmp_path / "other.tar.gz"
    cifar100_archive(write_cifar100(tmp_path / "other", seed=1), wrong)
    with serve_file(wrong) as mirror:
        error, attempts = load(_config(tmp_path, mirror["url"]))
    assert attempts == 4 and mirror["requests"] == 4
    assert isinstance(error, cifar.ChecksumError)
    assert str(error) == (
        f"{mirror['url']} sent an archive that fails the cifar100 md5 checksum (the mirror "
        "serves another file?); use --download-url MIRROR, or put cifar-100-python/ in --data-dir"
    )
    assert _leftovers(tmp_path / "data") == []


def test_a_broken_archive_leaves_nothing_half_extracted(
    tmp_path: Path, archive, monkeypatch
) -> None:
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    monkeypatch.setattr(
        cifar.VARIANTS["cifar100"], "tgz_md5", hashlib.md5(broken.read_bytes()).hexdigest()
    )
    with serve_file(broken) as mirror:
        error, attempts = load(_config(tmp_path, mirror["url"]))
    assert isinstance(error, DatasetError), error
    assert "passes its md5 check but does not unpack" in str(error)
    assert attempts == 1  # a broken archive that passes its checksum will not mend on a retry
    assert _leftovers(tmp_path / "data") == []


def _unreadable_class(root: Path) -> str:
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "cat" / "a.png")
    (root / "dog" / "b.png").write_bytes(b"not an image")
    return f"imagefolder:{root}"


@pytest.mark.parametrize(
    ("case", "message", "requests"),
    [
        ("wrong mirror (404)", "HTTP Error 404", 1),
        ("dataset error", "classes without readable images: dog", 0),
    ],
)
def test_deterministic_errors_are_never_retried(
    tmp_path: Path, archive, case: str, message: str, requests: int
) -> None:
    with serve_file(archive, failures=1000, status=404) as mirror:
        config = _config(tmp_path, mirror["url"])
        if case == "dataset error":
            config = config.model_copy(update={"dataset": _unreadable_class(tmp_path / "images")})
        error, attempts = load(config)
    assert attempts == 1 and mirror["requests"] == requests
    assert isinstance(error, Exception) and message in str(error)
    assert _leftovers(tmp_path / "data") == []


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> float:
    """A read timeout of half a second instead of a minute (the stalls are real)."""
    monkeypatch.setattr(download, "READ_TIMEOUT_SECONDS", 0.5)
    return 0.5


def test_a_stalled_download_times_out_and_is_retried(tmp_path: Path, archive, short_timeout):
    with serve_file(archive, stalls=1) as mirror:
        manifest, attempts = load(_config(tmp_path, mirror["url"]))
    assert isinstance(manifest, StageManifest), manifest
    assert attempts == 2 and mirror["requests"] == 2
    assert manifest.info["rows"] == 84
    assert _leftovers(tmp_path / "data") == ["cifar-100-python"]  # no .download-* folder left


def test_a_mirror_that_always_stalls_ends_in_one_line(tmp_path: Path, archive, short_timeout):
    with serve_file(archive, stalls=1000) as mirror:
        error, attempts = load(_config(tmp_path, mirror["url"]))
    assert attempts == 4 and mirror["requests"] == 4
    assert isinstance(error, cifar.DownloadError)
    assert str(error) == (
        f"could not download cifar100 from {mirror['url']} (timed out); check the network, "
        "use --download-url MIRROR, or put cifar-100-python/ in --data-dir"
    )
    assert _leftovers(tmp_path / "data") == []


def test_download_folders_of_killed_runs_are_swept_at_the_next_run(tmp_path: Path, archive):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    stale = tmp_path / "data" / f".download-{dead.stdout.strip()}-abcd"
    stale.mkdir(parents=True)
    (stale / "cifar-100-python.tar.gz").write_bytes(b"x" * 1000)  # what a killed run leaves
    with serve_file(archive) as mirror:
        manifest, _ = load(_config(tmp_path, mirror["url"]))
    assert isinstance(manifest, StageManifest), manifest
    assert _leftovers(tmp_path / "data") == ["cifar-100-python"]


def test_a_missing_file_url_is_not_retried(tmp_path: Path) -> None:
    url = (tmp_path / "nowhere.tar.gz").as_uri()
    error, attempts = load(_config(tmp_path, url))
    assert attempts == 1
    assert str(error) == (
        f"could not download cifar100 from {url}: no such file; use --download-url MIRROR, "
        "or put cifar-100-python/ in --data-dir"
    )
    assert _leftovers(tmp_path / "data") == []
