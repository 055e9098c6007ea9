"""Stage: the one stage declaration (cache, early return, registry writes, manifest) and the
Prefect internals it relies on, which must fail here, loudly, when a Prefect release moves them."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from prefect import flow, task
from prefect.context import TaskRunContext
from prefect.results import ResultStore, get_default_result_storage
from prefect.transactions import Transaction

from flows.config import RunConfig
from storage.manifest import MANIFEST_NAME, StageManifest
from tasks.core import prefect_private
from tasks.core.params import StageParams
from tasks.core.stage import Output, Stage

pytestmark = pytest.mark.usefixtures("prefect_server")


def _history(epochs: int) -> pa.Table:
    return pa.table(
        {
            "epoch": np.arange(1, epochs + 1, dtype=np.int32),
            **{c: np.zeros(epochs) for c in ("train_loss", "val_loss")},
            **{c: np.ones(epochs) for c in ("train_accuracy", "val_accuracy")},
        }
    )


def test_a_stage_task_computes_its_inputs_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def key_inputs(params: StageParams) -> dict:
        calls.append(1)  # stands in for costly inputs: a folder listing, a weights hash
        return {"listing": "abc"}

    stage = Stage("probe", "v1", lambda params: {"x": 1}, key_inputs=key_inputs)

    @stage.task()
    def probe(params: StageParams, target) -> Output:
        return Output(files={"where.txt": target.url.encode()})

    @flow
    def run(params: StageParams) -> StageManifest:
        return probe(params)

    params = RunConfig(dataset="synthetic", out=str(tmp_path)).params.common
    manifest = run(params)
    assert len(calls) == 1  # for the cache key; the early-return check and the body reused it
    assert manifest.location.read_bytes("where.txt").decode() == manifest.url
    assert manifest.params == {"x": 1}  # the key parameters recorded; input fingerprints not
    assert manifest.url == stage.location(params=params).url  # outside a task: same folder
    assert len(calls) == 2


def test_a_declared_stage_writes_its_tables_and_manifest_and_reuses_them(tmp_path: Path) -> None:
    runs: list[int] = []
    stage = Stage("probe", "v1")

    @stage.task(retries=2)
    def probe(upstream: int, params: StageParams) -> Output:
        """A stage body: a registry table, a file, params and info out; no paths."""
        runs.append(upstream)
        return Output(
            tables={"training_history": _history(upstream)},
            files={"note.txt": b"hi"},
            info={"epochs": upstream},
        )

    params = StageParams(dataset="synthetic", out=str(tmp_path))
    # the task's parameters are the body's, without the folder handle; named after the stage
    assert list(inspect.signature(probe.fn).parameters) == ["upstream", "params"]
    assert probe.name == "probe" and probe.retries == 2
    first = probe.fn(3, params)
    assert set(first.files) == {"training_history.parquet", "note.txt"}
    assert first.files["training_history.parquet"].rows == 3 and first.info == {"epochs": 3}
    assert first.url.endswith(f"/synthetic/probe/{first.key}") and first.problems() == []
    again = probe.fn(3, params)  # intact output: returned without running the body
    assert runs == [3] and again.created == first.created and first.code_version == "v1"
    other = probe.fn(4, params)  # other inputs: another folder
    assert runs == [3, 4] and other.url != first.url
    # another code version: another folder
    assert Stage("probe", "v2").location(upstream=3, params=params).url != first.url


def test_a_table_that_does_not_fit_its_schema_writes_no_manifest(tmp_path: Path) -> None:
    stage = Stage("probe", "v1")

    @stage.task()
    def probe(params: StageParams) -> Output:
        return Output(tables={"training_history": pa.table({"epoch": [1]})})

    params = StageParams(dataset="synthetic", out=str(tmp_path))
    with pytest.raises(ValueError, match="does not fit its schema"):
        probe.fn(params)
    assert not stage.location(params=params).exists(MANIFEST_NAME)


def test_the_prefect_internals_we_use_are_still_there() -> None:
    """If this fails, a Prefect release changed them: update tasks/core/prefect_private.py."""
    assert {"cache", "result_storage", "metadata_storage"} <= set(ResultStore.model_fields)
    assert get_default_result_storage(_sync=True).basepath  # where the records are deleted
    assert "key" in Transaction.model_fields
    assert "result_store" in TaskRunContext.model_fields


def test_a_forgotten_result_is_computed_again(tmp_path: Path) -> None:
    runs: list[int] = []

    @task(cache_key_fn=lambda context, parameters: f"forget-probe-{tmp_path.name}")
    def probe() -> int:
        runs.append(1)
        if len(runs) == 2:  # inside the second run: its own key, and no record left
            assert prefect_private.running_cache_key() == f"forget-probe-{tmp_path.name}"
        return len(runs)

    @task
    def forget() -> bool:
        context = TaskRunContext.get()
        return prefect_private.forget_cached_result(context, f"forget-probe-{tmp_path.name}")

    @flow
    def run() -> list:
        return [probe(), probe(), forget(), probe(), forget(), forget()]

    assert run() == [1, 1, True, 2, True, False]
