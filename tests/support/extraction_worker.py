"""A real load + extraction run in a process of its own, for the crash and concurrency tests.

    python -m tests.support.extraction_worker \
        '{"dataset": "synthetic", "out": "...", "shard_size": 150}'

prints one JSON line: the flow's state, its task states and the embeddings manifest. With
``PAUSE=after:NAME`` or ``PAUSE=during:NAME`` and ``PAUSE_FILE=PATH`` it stops for good once the
embeddings shard NAME is in place, or halfway through writing it (the temporary file holds half
its bytes), and creates PAUSE_FILE, so that a test can SIGKILL it at exactly that point. With
``GO_FILE=PATH`` it starts the flow only once PATH exists (after its imports), so that a test can
start several runs at the same moment.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.settings import get_current_settings

import storage.table_spec
from flows.config import RunConfig
from storage.fs import Location
from storage.manifest import StageManifest
from storage.tables import COMPRESSION, conform
from tasks.embeddings import embeddings_task
from tasks.images import images_task
from tests.support.paths import REPO


@flow(name="extraction")
def extraction(config: RunConfig) -> StageManifest:
    """Load the dataset and embed it: the expensive half of the class-overlap flow."""
    images = images_task(config.params.images)
    return embeddings_task(images, config.params.embeddings)


def _freeze(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(3600)  # until SIGKILL


def pause_at(mode: str, shard: str, marker: str) -> None:
    """Make the extraction stop for good after, or in the middle of, writing ``shard``."""
    write_parquet = storage.table_spec.write_parquet  # the registry's writer

    def write(location: Location, name: str, table: pa.Table, schema: pa.Schema) -> int:
        if name != shard or "/embeddings/" not in location.url:  # images shards share names
            return write_parquet(location, name, table, schema)
        if mode == "after":
            rows = write_parquet(location, name, table, schema)
            _freeze(marker)
            return rows
        buffer = io.BytesIO()
        pq.write_table(conform(table, schema), buffer, compression=COMPRESSION)
        data = buffer.getvalue()
        with location.atomic_open(name) as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            _freeze(marker)
        return table.num_rows

    storage.table_spec.write_parquet = write


def task_states(flow_run_id: Any) -> dict[str, str]:
    """Final state name of each task run of a flow run, by task name."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}


def main(argv: list[str]) -> int:
    config = RunConfig.model_validate_json(argv[0])
    if "PAUSE" in os.environ:
        mode, shard = os.environ["PAUSE"].split(":", 1)
        pause_at(mode, shard, os.environ["PAUSE_FILE"])
    if "GO_FILE" in os.environ:
        go = Path(os.environ["GO_FILE"])
        Path(f"{go}.{os.getpid()}.ready").touch()
        while not go.exists():
            time.sleep(0.01)
    state = extraction(config, return_state=True)
    manifest = state.result(raise_on_failure=False)
    report = {
        "state": state.name,
        "tasks": task_states(state.state_details.flow_run_id),
        "embeddings": manifest.model_dump(mode="json")
        if isinstance(manifest, StageManifest)
        else None,
    }
    print(json.dumps(report))
    return 0 if state.is_completed() else 1


# --- the test's side -------------------------------------------------------------------------

ROOT = REPO
STARTED: list[subprocess.Popen] = []


def kill_leftovers() -> None:
    """SIGKILL every worker still alive (a failed test must not leave paused ones behind)."""
    while STARTED:
        worker = STARTED.pop()
        if worker.poll() is None:
            kill(worker)


def start(config: RunConfig, log: Path, **env: str) -> subprocess.Popen:
    """Start a worker against this test session's Prefect server and home; output to ``log``."""
    variables = {
        **os.environ,
        "PREFECT_API_URL": str(get_current_settings().api.url),
        "PREFECT_LOGGING_LEVEL": "INFO",
        **env,
    }
    with log.open("w") as output:  # a file, not a pipe: a full pipe would stall the worker
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.support.extraction_worker", config.model_dump_json()],
            cwd=ROOT,
            env=variables,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    STARTED.append(worker)
    return worker


def finish(process: subprocess.Popen, log: Path, timeout: float = 300) -> tuple[dict, str]:
    """Wait for a worker; its JSON report and its whole output (logs)."""
    process.wait(timeout=timeout)
    output = log.read_text()
    assert process.returncode == 0, output[-3000:]
    return json.loads(output.strip().splitlines()[-1]), output


def kill(process: subprocess.Popen) -> None:
    """SIGKILL: no handler, no cleanup, no flushing; like a lost machine or the OOM killer."""
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def start_held(config: RunConfig, log: Path, **env: str) -> subprocess.Popen:
    """Start a worker that imports everything, then waits for ``release`` to start its flow."""
    go = log.with_suffix(".go")
    worker = start(config, log, GO_FILE=str(go), **env)
    worker.go = go  # type: ignore[attr-defined]
    return worker


def release(*workers: subprocess.Popen) -> None:
    """Start the flows of held workers at the same moment, once all have imported."""
    for worker in workers:
        wait_for(Path(f"{worker.go}.{worker.pid}.ready"), worker)  # type: ignore[attr-defined]
    for worker in workers:
        worker.go.touch()  # type: ignore[attr-defined]


def wait_for(marker: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until a paused worker has created ``marker``."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"worker ended (exit {process.returncode}) before pausing")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"worker did not reach {marker.name} in {timeout} s")
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
