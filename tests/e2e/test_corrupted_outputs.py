"""Corrupted and missing outputs: the next run notices, says so, recomputes only what is affected.

Each test damages the outputs of a finished synthetic run (a shard, a table, a manifest) and runs
the real flow again under the test server.
"""

from __future__ import annotations

import io
import logging
import struct
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    LogFilter,
    LogFilterFlowRunId,
    LogFilterLevel,
)

from flows.config import RunConfig
from flows.overlap_flow import class_overlap
from storage.fs import Location
from storage.manifest import MANIFEST_NAME, StageManifest, read_manifest, valid_manifest
from storage.tables import read_shards, shard_name
from tasks.core.params import EmbeddingsParams
from tasks.embeddings import embeddings
from tests.support.flow_states import assert_only, task_states

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def run(config: RunConfig) -> tuple[dict, dict[str, str], list[str]]:
    """Run the flow: its record, each task's final state and the run's warnings (from the API)."""
    state = class_overlap(config, return_state=True)
    record = state.result()
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        log_filter = LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]), level=LogFilterLevel(ge_=30)
        )
        warnings: list[str] = []
        for _ in range(200):  # run logs reach the API in batches, every 2 s (slower under load)
            warnings = [log.message for log in client.read_logs(log_filter=log_filter)]
            if any("are missing or changed" in w for w in warnings):
                break
            time.sleep(0.1)
    return record, task_states(state), warnings


def stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file: unchanged means not rewritten."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, dict]:
    out = tmp_path_factory.mktemp("corrupt") / "out"
    # small and quick: 32 px still separates the planted twins; the report without pair pages
    config = RunConfig(
        dataset="synthetic",
        out=str(out),
        shard_size=300,
        image_size=32,
        epochs=20,
        report_pairs=0,
        grid_images=1,
    )
    record, states, _ = run(config)
    assert set(states.values()) == {"Completed"}
    return config, record


def stage_dir(record: dict, stage: str) -> Path:
    return Path(record["stages"][stage]["url"])


def assert_noticed(warnings: list[str], stage: str, url: Path, problem: str) -> None:
    notices = [w for w in warnings if w.startswith(f"{stage}: outputs at {url} ")]
    assert len(notices) == 1, warnings
    assert "are missing or changed" in notices[0] and problem in notices[0], notices[0]
    assert notices[0].endswith("; recomputing")


def test_a_truncated_shard_is_recomputed_alone(finished) -> None:
    config, record = finished
    folder = stage_dir(record, "embeddings")
    before = read_shards(Location(str(folder)))
    shard = folder / shard_name(1)
    size = shard.stat().st_size
    shard.write_bytes(shard.read_bytes()[:100])
    untouched = {
        n: s for n, s in stamps(folder).items() if n.startswith("part-") and n != shard.name
    }

    again, states, warnings = run(config)

    assert_noticed(
        warnings, "embeddings", folder, f"{shard.name} changed size (100 != {size} bytes)"
    )
    assert_only(states, "embeddings")
    after = stamps(folder)
    assert {n: after[n] for n in untouched} == untouched  # the other three shards stay as they were
    assert read_shards(Location(str(folder))).equals(before)
    assert again["stages"] == record["stages"]


def test_a_deleted_table_is_recomputed_alone(finished) -> None:
    config, record = finished
    folder = stage_dir(record, "class_similarity")
    table = folder / "class_similarity.parquet"
    before = table.read_bytes()
    table.unlink()

    again, states, warnings = run(config)

    assert_noticed(warnings, "class_similarity", folder, "class_similarity.parquet is missing")
    assert_only(states, "class_similarity")
    assert table.read_bytes() == before
    assert again["stages"] == record["stages"]


def test_a_deleted_manifest_reloads_the_images_and_nothing_downstream(finished) -> None:
    config, record = finished
    folder = stage_dir(record, "images")
    (folder / MANIFEST_NAME).unlink()

    again, states, warnings = run(config)

    assert_noticed(warnings, "images", folder, f"{MANIFEST_NAME} is missing or unreadable")
    assert_only(states, "images")  # same bytes again, so extraction's key is unchanged
    assert valid_manifest(Location(str(folder))) is not None
    assert again["stages"] == record["stages"]


def test_a_truncated_manifest_rewrites_it_without_recomputing_shards(finished) -> None:
    config, record = finished
    folder = stage_dir(record, "embeddings")
    manifest = folder / MANIFEST_NAME
    manifest.write_bytes(manifest.read_bytes()[:50])
    shards = {n: s for n, s in stamps(folder).items() if n.startswith("part-")}

    again, states, warnings = run(config)

    assert_noticed(warnings, "embeddings", folder, f"{MANIFEST_NAME} is missing or unreadable")
    assert_only(states, "embeddings")
    after = stamps(folder)
    assert {n: after[n] for n in shards} == shards  # every shard was already done: none redone
    assert valid_manifest(Location(str(folder))) is not None
    assert again["stages"] == record["stages"]


def flip_100_bytes(path: Path, offset: int) -> None:
    """Invert 100 bytes in place: the file keeps its size."""
    data = bytearray(path.read_bytes())
    data[offset : offset + 100] = bytes(b ^ 0xFF for b in data[offset : offset + 100])
    path.write_bytes(bytes(data))


def padded_parquet(table: pa.Table, size: int) -> bytes:
    """A valid Parquet file of ``table`` padded to ``size`` bytes (before its footer)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    data = buffer.getvalue()
    footer_at = len(data) - 8 - struct.unpack("<i", data[-8:-4])[0]  # offsets stay valid
    return data[:footer_at] + b"\0" * (size - len(data)) + data[footer_at:]


def test_a_same_size_change_in_a_small_table_is_recomputed_alone(finished) -> None:
    config, record = finished
    folder = stage_dir(record, "subset")
    table = folder / "splits.parquet"
    before = table.read_bytes()
    flip_100_bytes(table, len(before) // 2)

    again, states, warnings = run(config)

    assert_noticed(warnings, "subset", folder, "splits.parquet changed content")
    assert_only(states, "subset")
    assert table.read_bytes() == before
    assert again["stages"] == record["stages"]


def test_a_same_size_change_in_a_shard_is_recomputed_alone(finished) -> None:
    config, record = finished
    folder = stage_dir(record, "embeddings")
    before = read_shards(Location(str(folder)))
    shard = folder / shard_name(1)
    flip_100_bytes(shard, shard.stat().st_size // 3)
    untouched = {
        n: s for n, s in stamps(folder).items() if n.startswith("part-") and n != shard.name
    }

    again, states, warnings = run(config)

    assert_noticed(warnings, "embeddings", folder, f"{shard.name} changed content")
    assert_only(states, "embeddings")
    after = stamps(folder)
    assert {n: after[n] for n in untouched} == untouched  # only the damaged shard is redone
    assert read_shards(Location(str(folder))).equals(before)
    assert again["stages"] == record["stages"]


def test_a_valid_table_of_another_schema_padded_to_the_same_size_is_recomputed(finished) -> None:
    config, record = finished
    folder = stage_dir(record, "overlap")
    table = folder / "overlap_pairs.parquet"
    before = table.read_bytes()
    table.write_bytes(padded_parquet(pa.table({"other": ["a", "b"]}), len(before)))
    assert pq.read_table(table).column_names == ["other"]  # valid, and of the same size

    again, states, warnings = run(config)

    assert_noticed(warnings, "overlap", folder, "overlap_pairs.parquet changed content")
    assert_only(states, "overlap")
    assert table.read_bytes() == before
    assert again["stages"] == record["stages"]


@flow(name="embeddings on a cluster")
def embeddings_on_a_cluster(images: StageManifest, params: EmbeddingsParams) -> StageManifest:
    return embeddings(images, params, on_cluster=True)


def test_a_damaged_shard_is_embedded_again_by_its_cluster_task(finished, caplog) -> None:
    config, record = finished
    folder = stage_dir(record, "embeddings")
    before = read_shards(Location(str(folder)))
    shard = folder / shard_name(1)
    flip_100_bytes(shard, shard.stat().st_size // 3)  # still a readable shard of the same rows
    untouched = {
        n: s for n, s in stamps(folder).items() if n.startswith("part-") and n != shard.name
    }
    images = read_manifest(Location(record["stages"]["images"]["url"]))
    assert images is not None

    caplog.set_level(logging.INFO, logger="prefect.flow_runs")

    embeddings_on_a_cluster(images, config.params.embeddings)

    # the shard task embedded it (a damaged shard that still reads would have counted as done)
    assert "embedded 1 shard(s) on the cluster (3 already done)" in caplog.messages
    after = stamps(folder)
    assert {n: after[n] for n in untouched} == untouched
    assert read_shards(Location(str(folder))).equals(before)
