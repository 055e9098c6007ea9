"""Final state of every task of a flow run, its subflows' tasks included."""

from __future__ import annotations

import re
import time
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
)

DEFAULT_SUFFIX = re.compile(r"-[0-9a-f]{3}$")

# The stages with a cache key (record, the run's own log, and publishing the report's artifacts
# run every time by design).
CACHED_STAGES = [
    "images",
    "embeddings",
    "neighbours",
    "class_similarity",
    "overlap",
    "subset",
    "classifier",
    "evaluate",
    "confusion",
    "report",
]


def assert_only(states: dict[str, str], *recomputed: str) -> None:
    """The ``recomputed`` stages ran again; every other cached stage was served from the cache."""
    assert all(states[name] == "Completed" for name in recomputed), states
    others = {name: states[name] for name in CACHED_STAGES if name not in recomputed}
    assert set(others.values()) == {"Cached"}, states


def task_states(flow_state: Any, wait_s: float = 60.0) -> dict[str, str]:
    """Task name (without its run suffix) -> state name, over the flow run and its subflows.

    A finished flow's task runs are final, but the server records task states from events, a
    moment after the flow's own state: a task read too early still says Pending. So this reads
    again, for up to ``wait_s`` seconds, until every task run's state is final.
    """
    with get_client(sync_client=True) as client:
        runs = settled_task_runs(client, flow_state.state_details.flow_run_id, wait_s)
    # Default run names end in "-" and three hex digits; custom ones (``embed part-00000.parquet``)
    # are kept whole.
    return {DEFAULT_SUFFIX.sub("", r.name): r.state.name for r in runs if r.state is not None}


def settled_task_runs(client: Any, flow_run_id: Any, wait_s: float = 60.0) -> list[Any]:
    """The task runs of a finished flow run and its subflows, once every state is final (or
    after ``wait_s`` seconds, so that an assertion shows the states that never became final)."""
    deadline = time.monotonic() + wait_s
    while True:
        runs = _task_runs(client, flow_run_id)
        settled = all(r.state is not None and r.state.is_final() for r in runs)
        if settled or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)


def _task_runs(client: Any, flow_run_id: Any) -> list[Any]:
    """The task runs of the flow run and of its subflows."""
    children = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
        )
    )
    ids = [flow_run_id, *(child.id for child in children)]
    return client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200
    )
