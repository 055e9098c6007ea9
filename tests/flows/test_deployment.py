"""prefect.yaml against a real server: deploy with the CLI, run through a worker, scheduled re-runs.

One `prefect server start` (temporary home, free loopback port) serves the whole module. Every
process the tests start runs in its own process group and is stopped at teardown, on failure too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import polars as pl
import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
)
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.support.flow_states import assert_only, settled_task_runs
from tests.support.paths import REPO

pytestmark = pytest.mark.slow

REPO = REPO
PREFECT = str(Path(sys.executable).with_name("prefect"))
SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}
POOL = DEPLOYMENTS["synthetic"]["work_pool"]["name"]
FLOW = "class-overlap"
SYNTHETIC = f"{FLOW}/synthetic"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), including those in their own session."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def stop(process: subprocess.Popen, grace: float = 15) -> None:
    """Stop a process started with ``start_new_session``, its group and every descendant."""
    below = _descendants(process.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for pid in below:  # a flow-run process may sit in a session of its own
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    process.wait(5)


@dataclass
class Server:
    """A running `prefect server start`, with the environment every CLI call and worker uses."""

    url: str
    env: dict[str, str]
    logs: Path

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run ``prefect ARGS`` from the repository root against this server."""
        return subprocess.run(
            [PREFECT, "--no-prompt", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_worker(self, name: str) -> tuple[subprocess.Popen, Path]:
        """``prefect worker start --run-once --limit 1``, running: it executes one due run."""
        log = self.logs / f"worker-{name}.log"
        command = [PREFECT, "worker", "start", "--pool", POOL, "--run-once", "--limit", "1"]
        with log.open("w") as handle:
            process = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return process, log

    def worker(self, name: str, timeout: float = 300) -> str:
        """A worker that executes one due run, waited for; returns its log."""
        process, log = self.start_worker(name)
        try:
            process.wait(timeout)
        finally:
            stop(process)
        return log.read_text()

    @contextlib.contextmanager
    def client(self) -> Iterator[SyncPrefectClient]:
        """A Prefect client of this server (not of the suite's test harness)."""
        with temporary_settings({PREFECT_API_URL: self.url}), get_client(sync_client=True) as c:
            yield c


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real Prefect server on a free loopback port with a temporary home; stopped at the end."""
    base = tmp_path_factory.mktemp("deployment")
    home, port = base / "home", _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        # The scheduler looks for new schedules every second and plans a few runs ahead only.
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "5",
    }
    env.pop("PREFECT_API_URL", None)
    log = base / "server.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prefect server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(url=url, env={**env, "PREFECT_API_URL": url}, logs=base)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def deployed(server: Server) -> Server:
    """The work pool named in prefect.yaml, and every deployment of the file, made with the CLI."""
    for args in (("work-pool", "create", POOL, "--type", "process"), ("deploy", "--all")):
        result = server.cli(*args)
        assert result.returncode == 0, result.stdout + result.stderr
    return server


def _flow_run_id(cli_output: str) -> UUID:
    return UUID(re.search(r"UUID: ([0-9a-f-]{36})", cli_output).group(1))


def _task_states(client: SyncPrefectClient, flow_run_id: UUID) -> dict[str, str]:
    runs = settled_task_runs(client, flow_run_id)
    return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}


@pytest.fixture(scope="module")
def triggered(deployed: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run of the synthetic deployment with its output redirected, executed by a worker."""
    out = tmp_path_factory.mktemp("triggered")
    # A partial config (report_pairs=0 skips per-pair UMAPs, which only cost time here).
    config = {"dataset": "synthetic", "out": str(out / "out"), "report_pairs": 0}
    result = deployed.cli("deployment", "run", SYNTHETIC, "-p", f"config={json.dumps(config)}")
    assert result.returncode == 0, result.stdout + result.stderr
    flow_run_id = _flow_run_id(result.stdout)
    log = deployed.worker("triggered")
    with deployed.client() as client:
        flow_run = client.read_flow_run(flow_run_id)
        states = _task_states(client, flow_run_id)
    return {"config": config, "flow_run": flow_run, "states": states, "log": log}


def test_deploy_all_creates_the_deployments_of_prefect_yaml(deployed: Server) -> None:
    with deployed.client() as client:
        for name, spec in DEPLOYMENTS.items():
            deployment = client.read_deployment_by_name(f"{FLOW}/{name}")
            assert deployment.work_pool_name == POOL
            assert deployment.entrypoint == spec["entrypoint"]
            assert deployment.parameters == spec["parameters"]
            assert deployment.enforce_parameter_schema
            # No `pull` in the file: the worker runs the code of the folder deployed from.
            step = deployment.pull_steps[0]["prefect.deployments.steps.set_working_directory"]
            assert Path(step["directory"]) == REPO
            [schedule] = deployment.schedules
            assert schedule.active == spec["schedules"][0]["active"]
    cifar = DEPLOYMENTS["cifar100"]["schedules"][0]
    assert cifar["active"] is False and cifar["cron"]  # nothing downloads by accident


def test_a_bad_parameter_is_refused_when_the_run_is_created(deployed: Server) -> None:
    with deployed.client() as client:
        deployment = client.read_deployment_by_name(SYNTHETIC)
        filter_ = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        before = client.count_flow_runs(deployment_filter=filter_)
        bad = {"dataset": "synthetic", "batch_size": 0}
        with pytest.raises(Exception, match="batch_size"):
            client.create_flow_run_from_deployment(deployment.id, parameters={"config": bad})
        assert client.count_flow_runs(deployment_filter=filter_) == before
    for config, message in (
        ({"dataset": "synthetic", "overlap_rule": "nope"}, "config.overlap_rule"),
        ({"dataset": "synthetic", "batch_sise": 8}, "'batch_sise' was unexpected"),
    ):
        result = deployed.cli("deployment", "run", SYNTHETIC, "-p", f"config={json.dumps(config)}")
        assert result.returncode == 1
        assert message in " ".join((result.stdout + result.stderr).split())


def test_a_triggered_run_with_a_parameter_override_completes(triggered: dict[str, Any]) -> None:
    flow_run, states, log = triggered["flow_run"], triggered["states"], triggered["log"]
    assert flow_run.state.name == "Completed", log[-5000:]
    assert states["embeddings"] == "Completed" and set(states.values()) == {"Completed"}
    out = Path(triggered["config"]["out"])
    latest = json.loads((out / "latest.json").read_text())
    # A partial config: every field it leaves out takes RunConfig's default.
    assert latest["params"]["model"] == "vit_tiny_patch16_224"
    assert latest["params"]["overlap_k"] == 3.0
    pairs = pl.read_parquet(latest["stages"]["overlap"]["tables"]["overlap_pairs.parquet"])
    assert pairs.height > 0 and {"class_a", "class_b", "cosine"} <= set(pairs.columns)
    embeddings = pl.read_parquet(out / "synthetic" / "embeddings" / "*" / "*.parquet")
    assert embeddings.height == 1200


def _scheduled_runs(client: SyncPrefectClient, deployment_id: UUID) -> list:
    """The deployment's runs created by the scheduler, earliest first."""
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC,
    )
    return [r for r in runs if r.auto_scheduled]


def _wait_for_a_due_run(server: Server, deployment_id: UUID, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while not any(
            r.state.is_scheduled() and r.expected_start_time.timestamp() <= time.time() + 5
            for r in _scheduled_runs(client, deployment_id)
        ):
            assert time.monotonic() < deadline, "the scheduler created no run"
            time.sleep(1)


def test_scheduled_runs_are_executed_and_served_from_cache(
    deployed: Server, triggered: dict[str, Any]
) -> None:
    assert triggered["flow_run"].state.name == "Completed"
    with deployed.client() as client:
        deployment = client.read_deployment_by_name(SYNTHETIC)
        # The triggered run's outputs (a temporary folder), and a schedule short enough to test.
        client.update_deployment(
            deployment.id, DeploymentUpdate(parameters={"config": triggered["config"]})
        )
    result = deployed.cli(
        "deployment", "schedule", "create", SYNTHETIC, "--interval", "10", "--replace", "-y"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for attempt in range(2):
        _wait_for_a_due_run(deployed, deployment.id)
        log = deployed.worker(f"scheduled-{attempt}")
        with deployed.client() as client:
            done = [r for r in _scheduled_runs(client, deployment.id) if r.state.is_final()]
            assert len(done) == attempt + 1, log[-5000:]
    with deployed.client() as client:
        for run in done:
            assert run.state.name == "Completed"
            assert run.parameters == {"config": triggered["config"]}
            # The triggered run computed everything; every scheduled run reuses it.
            states = _task_states(client, run.id)
            assert_only(states)
    _stop_the_schedule(deployed, deployment.id)


def _stop_the_schedule(server: Server, deployment_id: UUID) -> None:
    """No schedule and no scheduled run left: a later test's --run-once worker would pick one."""
    result = server.cli("deployment", "schedule", "clear", SYNTHETIC, "-y")
    assert result.returncode == 0, result.stdout + result.stderr
    with server.client() as client:
        for run in _scheduled_runs(client, deployment_id):
            if not run.state.is_final():
                client.delete_flow_run(run.id)


def _final_state(server: Server, flow_run_id: UUID, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while not (state := client.read_flow_run(flow_run_id).state).is_final():
            assert time.monotonic() < deadline, f"flow run still {state.name} after {timeout} s"
            time.sleep(0.5)
    return state


def test_a_run_cancelled_from_the_ui_stops_on_the_worker_and_the_next_run_resumes(
    deployed: Server, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = {"dataset": "synthetic", "out": str(out), "report_pairs": 0, "shard_size": 150}
    parameters = f"config={json.dumps(config)}"
    cancelled = _flow_run_id(deployed.cli("deployment", "run", SYNTHETIC, "-p", parameters).stdout)
    worker, log = deployed.start_worker("cancelled")
    try:
        # Cancelled once its first stage is done: the run is then extracting, or further on.
        deadline = time.monotonic() + 300
        while not list(out.glob("synthetic/images/*/_manifest.json")):
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        flow_run_processes = _descendants(worker.pid)
        result = deployed.cli("flow-run", "cancel", str(cancelled))  # what the UI's button does
        assert result.returncode == 0, result.stdout + result.stderr
        asked = time.monotonic()
        state = _final_state(deployed, cancelled)
        stopped_in = time.monotonic() - asked
        worker.wait(120)  # --run-once: it ends once its run has
    finally:
        stop(worker)
    assert state.name == "Cancelled", log.read_text()[-5000:]
    assert stopped_in < 60, f"cancelled run still going {stopped_in:.0f} s after the request"
    assert not [pid for pid in flow_run_processes if Path(f"/proc/{pid}").exists()]
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert not (out / "latest.json").exists()

    resumed = _flow_run_id(deployed.cli("deployment", "run", SYNTHETIC, "-p", parameters).stdout)
    log_text = deployed.worker("resumed")
    with deployed.client() as client:
        flow_run = client.read_flow_run(resumed)
        states = _task_states(client, resumed)
    assert flow_run.state.name == "Completed", log_text[-5000:]
    assert states["images"] == "Cached"  # what the cancelled run finished is kept
    assert json.loads((out / "latest.json").read_text())["stages"]["embeddings"]
