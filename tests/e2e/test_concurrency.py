"""Concurrency: two runs with the same parameters started at the same moment extract once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.config import RunConfig
from storage.fs import TMP_MARKER
from storage.tables import shard_name
from tests.support.extraction_worker import finish, kill_leftovers, release, start_held

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture(autouse=True)
def _no_stray_workers() -> Iterator[None]:
    yield
    kill_leftovers()


def test_two_simultaneous_runs_extract_once_and_agree(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = RunConfig(
        dataset="synthetic", out=str(out), shard_size=400, batch_size=50, image_size=16
    )
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [start_held(config, log) for log in logs]
    release(*workers)  # both flows start at the same moment
    (a, log_a), (b, log_b) = (finish(w, log) for w, log in zip(workers, logs, strict=True))

    # Each stage ran in exactly one of the two runs; the other waited on its lock, then read it.
    for task in ("images", "embeddings"):
        assert sorted([a["tasks"][task], b["tasks"][task]]) == ["Cached", "Completed"], (a, b)
    assert (log_a + log_b).count("embedded 1200 images") == 1
    assert (log_a + log_b).count("synthetic: 1200 images in 12 classes") == 1

    # Both runs point at the same, complete, untouched outputs.
    assert a["embeddings"] == b["embeddings"]
    folder = Path(a["embeddings"]["url"])
    shards = [shard_name(i) for i in range(3)]
    assert sorted(os.listdir(folder)) == sorted([*shards, "_manifest.json"])
    assert a["embeddings"]["info"]["rows"] == 1200
    assert not [p for p in out.rglob("*") if TMP_MARKER in p.name]
