"""The same flow on a local Dask or Ray cluster gives exactly the outputs of the threads runner."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from flows.config import RunConfig
from flows.overlap_flow import class_overlap
from flows.runners import RESULTS_FOLDER, check_runner
from tests.support.flow_states import task_states

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

# Compared table by table; each sorted by its key so that write order does not matter.
TABLES = {
    "images": ("*.parquet", ["sample_id"]),
    "embeddings": ("*.parquet", ["sample_id"]),
    "class_similarity": ("class_similarity.parquet", ["label_a", "label_b"]),
    "overlap": ("overlap_pairs.parquet", ["class_a", "class_b"]),
    "subset": ("splits.parquet", ["sample_id"]),
    "evaluate": ("predictions.parquet", ["sample_id"]),
    "confusion": ("confusion_pairs.parquet", ["True", "Pred"]),
}


def installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def small_config(out: Path, **update: object) -> RunConfig:
    """The synthetic run, with the report's per-pair figures left out to keep the test short."""
    return RunConfig(dataset="synthetic", out=str(out), report_pairs=0, shard_size=300, **update)


def read(record: dict, stage: str) -> pl.DataFrame:
    pattern, keys = TABLES[stage]
    return pl.read_parquet(Path(record["stages"][stage]["url"]) / pattern).sort(keys)


@pytest.fixture(scope="module")
def threads_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return class_overlap(small_config(tmp_path_factory.mktemp("threads")))


def run_on(runner: str, out: Path) -> tuple[dict, dict[str, str]]:
    state = class_overlap(small_config(out, runner=runner, workers=2), return_state=True)
    return state.result(), task_states(state)


def assert_same_outputs(record: dict, baseline: dict) -> None:
    for stage in TABLES:
        assert_frame_equal(read(record, stage), read(baseline, stage), check_exact=True)


@pytest.mark.skipif(not installed("prefect_dask", "distributed"), reason="pip install '.[dask]'")
def test_a_local_dask_cluster_gives_the_threads_outputs(threads_run, tmp_path: Path) -> None:
    record, states = run_on("dask", tmp_path / "dask")
    shard_runs = [name for name in states if name.startswith("embed part-")]
    assert len(shard_runs) == 4, states  # 1200 images in shards of 300: one task each
    assert states["embeddings"] == "Completed"
    assert_same_outputs(record, threads_run)
    assert (tmp_path / "dask" / RESULTS_FOLDER).is_dir(), "cache records follow --out"


@pytest.mark.skipif(not installed("prefect_ray", "ray"), reason="pip install '.[ray]'")
def test_a_local_ray_cluster_gives_the_threads_outputs(threads_run, tmp_path: Path) -> None:
    record, states = run_on("ray", tmp_path / "ray")
    shard_runs = [name for name in states if name.startswith("embed part-")]
    assert len(shard_runs) == 4, states  # extraction was spread over the cluster, as on Dask
    assert_same_outputs(record, threads_run)


def test_a_runner_that_is_not_installed_is_named_with_its_extra(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "prefect_ray" else real(name, *a),
    )
    with pytest.raises(ValueError, match=r"pip install 'class-overlap\[ray\]'"):
        check_runner(RunConfig(dataset="synthetic", runner="ray"))
