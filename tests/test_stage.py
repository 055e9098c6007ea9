"""Stage: inside its own task run the folder key comes from the cache key, computed once."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow, task

from flows.config import RunConfig
from tasks.core.stage import Stage

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_a_stage_task_computes_its_inputs_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def inputs(config: RunConfig) -> dict:
        calls.append(1)  # stands in for costly inputs: a folder listing, a weights hash
        return {"x": 1}

    stage = Stage("probe", inputs)

    @task(cache_policy=stage.cache_policy, persist_result=True)
    def probe(config: RunConfig) -> str:
        return stage.location(config=config).url

    @flow
    def run(config: RunConfig) -> str:
        return probe(config)

    config = RunConfig(dataset="synthetic", out=str(tmp_path))
    url = run(config)
    assert len(calls) == 1  # for the cache key; the task body reused it
    assert url == stage.location(config=config).url  # outside a task: computed, same folder
    assert len(calls) == 2
