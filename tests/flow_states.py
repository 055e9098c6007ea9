"""Final state of every task of a flow run, its subflows' tasks included."""

from __future__ import annotations

import re
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


def task_states(flow_state: Any) -> dict[str, str]:
    """Task name (without its run suffix) -> state name, over the flow run and its subflows."""
    flow_run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
            )
        )
        ids = [flow_run_id, *(child.id for child in children)]
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200
        )
    # Default run names end in "-" and three hex digits; custom ones (``embed part-00000.parquet``)
    # are kept whole.
    return {DEFAULT_SUFFIX.sub("", r.name): r.state.name for r in runs if r.state is not None}
