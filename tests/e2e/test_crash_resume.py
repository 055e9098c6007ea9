"""Crash and resume: a real extraction process SIGKILLed between shards and mid-write, resumed.

The promise: a killed run leaves no half file behind that a later run would trust, a rerun
computes only the shards that are missing, and the result is exactly an uninterrupted run's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow.compute as pc
import pytest

from flows.config import RunConfig
from storage.fs import TMP_MARKER, Location
from storage.manifest import MANIFEST_NAME
from storage.tables import read_shards, shard_name
from tests.support.extraction_worker import (
    extraction,
    finish,
    kill,
    kill_leftovers,
    release,
    start,
    start_held,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture(autouse=True)
def _no_stray_workers() -> Iterator[None]:
    yield
    kill_leftovers()


SHARD_SIZE = 150  # the synthetic set's 1200 images in 8 shards
SHARDS = 8


def _config(out: Path) -> RunConfig:
    # 16 px: one patch per image keeps the tiny random ViT cheap; the values still differ per image.
    return RunConfig(
        dataset="synthetic", out=str(out), shard_size=SHARD_SIZE, batch_size=50, image_size=16
    )


def _embeddings_dir(out: Path) -> Path:
    (folder,) = (out / "synthetic" / "embeddings").iterdir()
    return folder


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of each finished shard: unchanged means not rewritten."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(folder.glob("part-*.parquet"))
    }


def test_killed_extraction_resumes_to_exactly_the_uninterrupted_result(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Each next run starts (and imports) while the one before it works; released after the kill.
    first = start(
        _config(out),
        tmp_path / "1.log",
        PAUSE=f"after:{shard_name(1)}",
        PAUSE_FILE=str(tmp_path / "1"),
    )
    second = start_held(
        _config(out),
        tmp_path / "2.log",
        PAUSE=f"during:{shard_name(4)}",
        PAUSE_FILE=str(tmp_path / "2"),
    )
    # The uninterrupted reference runs here meanwhile, in the test's own process.
    reference = extraction(_config(tmp_path / "reference"))

    # 1. SIGKILL between shards: right after the second shard is in place.
    wait_for(tmp_path / "1", first)
    kill(first)
    folder = _embeddings_dir(out)
    assert sorted(os.listdir(folder)) == [shard_name(0), shard_name(1)]  # no manifest: unfinished
    after_first = _stamps(folder)

    # 2. SIGKILL in the middle of a shard write: half the bytes sit in a temporary file.
    third = start_held(_config(out), tmp_path / "3.log")
    release(second)
    wait_for(tmp_path / "2", second)
    kill(second)
    names = sorted(os.listdir(folder))
    assert [n for n in names if TMP_MARKER not in n] == [shard_name(i) for i in range(4)]
    (partial,) = [n for n in names if TMP_MARKER in n]
    assert partial.startswith(shard_name(4)) and (folder / partial).stat().st_size > 0
    after_second = _stamps(folder)
    assert {n: after_second[n] for n in after_first} == after_first  # shards 0-1 not redone
    assert "resuming: 2 of 8 shards already done" in (tmp_path / "2.log").read_text()

    # 3. Run to the end: it clears the half file and computes only shards 4-7.
    release(third)
    report, log = finish(third, tmp_path / "3.log")
    assert report["tasks"] == {"images": "Cached", "embeddings": "Completed"}
    assert "embeddings: removed 1 unfinished file(s) of an interrupted run" in log
    assert "resuming: 4 of 8 shards already done" in log
    final = _stamps(folder)
    assert {n: final[n] for n in after_second} == after_second  # shards 0-3 not redone
    assert sorted(os.listdir(folder)) == sorted(
        [*(shard_name(i) for i in range(SHARDS)), MANIFEST_NAME]
    )
    assert not [p for p in out.rglob("*") if TMP_MARKER in p.name]

    # Exactly the uninterrupted run's rows and values: none lost, none twice.
    resumed = read_shards(Location(str(folder)))
    assert resumed.equals(read_shards(reference.location))
    ids = resumed.column("sample_id")
    assert resumed.num_rows == 1200 == pc.count_distinct(ids).as_py()
    assert ids.to_pylist() == list(range(1200))
    assert report["embeddings"]["info"]["rows"] == 1200
    assert (
        report["embeddings"]["files"] == reference.model_dump(mode="json")["files"]
    )  # same sha256
