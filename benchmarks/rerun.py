"""Re-run cost: the synthetic flow cold, warm, then with only the confusion threshold changed."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import environment, prefect_env, write_json


def isolate(home: Path) -> None:
    """This process under a private Prefect home (see ``common.prefect_env``)."""
    os.environ.update(prefect_env(home, os.environ))
    os.environ.pop("PREFECT_API_URL", None)


def run_once(config: Any) -> dict[str, Any]:
    """Run the flow; return wall time, the flow run's own time and each task's state."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.overlap_flow import class_overlap

    start = time.perf_counter()
    state = class_overlap(config, return_state=True)
    wall = time.perf_counter() - start
    state.result()  # raise if the run failed
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run_id)
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    tasks = {
        r.name.rsplit("-", 1)[0]: {
            "state": r.state.name,
            "seconds": r.total_run_time.total_seconds(),
        }
        for r in sorted(runs, key=lambda r: r.expected_start_time or r.created)
    }
    return {"wall_s": wall, "flow_run_s": flow_run.total_run_time.total_seconds(), "tasks": tasks}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--change",
        nargs="*",
        default=["confusion_rule=sigma", "confusion_k=1"],
        help="KEY=VALUE settings of the third run",
    )
    parser.add_argument("--json", type=Path, default=None, help="default benchmarks/out/")
    return parser.parse_args()


def main() -> None:
    """Three runs in one process with a fresh Prefect home and output root."""
    args = parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="overlap-rerun-"))
    isolate(scratch / "prefect-home")
    from flows.config import RunConfig

    config = RunConfig(dataset="synthetic", out=str(scratch / "out"), data_dir=str(scratch))
    changes = dict(item.split("=", 1) for item in args.change)
    changed = RunConfig(**{**config.model_dump(), **changes})
    runs = {
        "cold (fresh home and output, includes server start)": run_once(config),
        "warm (same parameters)": run_once(config),
        f"changed ({', '.join(args.change)})": run_once(changed),
    }
    for label, run in runs.items():
        states = [task["state"] for task in run["tasks"].values()]
        print(
            f"\n{label}: wall {run['wall_s']:.1f} s, flow run {run['flow_run_s']:.1f} s, "
            f"{states.count('Cached')} cached, {states.count('Completed')} ran"
        )
        for name, task in run["tasks"].items():
            print(f"  {name:28s} {task['state']:10s} {task['seconds']:7.2f} s")
    record = {
        "command": "python benchmarks/rerun.py " + " ".join(sys.argv[1:]),
        "runs": runs,
        "scratch": str(scratch),
        "environment": environment(),
    }
    print("\nwrote", write_json("rerun", record, args.json))


if __name__ == "__main__":
    main()
