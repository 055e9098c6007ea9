"""A cold run on a busy machine: Prefect's temporary server gets the time it needs, or one line.

Each test runs ``overlap`` in a fresh process with its own Prefect home, so the temporary API
server starts cold, as on a user's first run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.cli import EPHEMERAL_STARTUP_VARIABLE
from tests.support.paths import REPO

ROOT = REPO
SPIN_SECONDS = 900  # a spinner's own bound, in case the test process dies without stopping it

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test's environment with a private Prefect home and no server or start-up setting."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in (EPHEMERAL_STARTUP_VARIABLE, "PREFECT_API_URL")
    }
    env |= {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PYTHONPATH": str(ROOT),
        "TQDM_DISABLE": "1",
        **extra,
    }
    return env


@pytest.fixture
def busy_cores() -> Iterator[int]:
    """A spinning process per core, each bounded in time, stopped after the test."""
    count = os.cpu_count() or 2
    spin = (
        f"import time\nend = time.monotonic() + {SPIN_SECONDS}\nwhile time.monotonic() < end: pass"
    )
    spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]
    try:
        yield count
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def _overlap(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "flows.cli", "run", "--dataset", "synthetic"]
    argv += ["--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data")]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)


def test_a_cold_run_completes_with_every_core_busy(tmp_path: Path, busy_cores: int) -> None:
    done = _overlap(tmp_path, _env(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "report: " in done.stdout
    assert (tmp_path / "out" / "latest.json").is_file()


def test_a_server_that_does_not_start_in_time_is_one_line(tmp_path: Path) -> None:
    # The user's own setting wins over the CLI's default: 1 s is too short for any start.
    done = _overlap(tmp_path, _env(tmp_path, **{EPHEMERAL_STARTUP_VARIABLE: "1"}))
    assert done.returncode == 1
    last = done.stderr.rstrip("\n").splitlines()[-1]
    assert last == (
        "overlap: error: Prefect's temporary API server did not start within 1 s (a busy "
        f"machine?); raise {EPHEMERAL_STARTUP_VARIABLE}, or start a server once with "
        "`prefect server start` and run with PREFECT_API_URL=http://127.0.0.1:4200/api"
    )
    assert "Traceback" not in done.stderr
