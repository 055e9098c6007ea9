"""Suite-wide setup: Prefect isolated in a temporary home with one test server; shared fixtures."""

from __future__ import annotations

import os
import tempfile

# Before Prefect is imported anywhere: a private home, so no cache record of another run is hit.
_HOME = tempfile.mkdtemp(prefix="overlap-tests-prefect-")
os.environ["PREFECT_HOME"] = _HOME
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = os.path.join(_HOME, "storage")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing downloads in tests
os.environ.setdefault("TQDM_DISABLE", "1")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from flows.config import RunConfig  # noqa: E402


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server for every test that runs a flow."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def synthetic_config(tmp_path: Path) -> RunConfig:
    """The offline demo configuration, writing under a fresh output root."""
    return RunConfig(
        dataset="synthetic", out=str(tmp_path / "out"), data_dir=str(tmp_path / "data")
    )
