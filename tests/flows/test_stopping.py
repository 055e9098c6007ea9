"""Stopping a real ``overlap run`` with real signals: Ctrl-C to its process group, SIGTERM, twice.

Each run is a process of its own, started in a session of its own, as a shell starts a job: a
terminal's Ctrl-C is a SIGINT to that whole process group. After the stop nothing may be left:
no process (Prefect's temporary server included), no open port, no temporary file; the flow run
reads Cancelled with the reason; the same command then resumes, and the tables are exactly an
uninterrupted run's.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.exceptions import TerminationSignal
from prefect.settings import get_current_settings

from flows.cli import EPHEMERAL_STARTUP_SECONDS, EPHEMERAL_STARTUP_VARIABLE, build_parser
from flows.config import RunConfig
from flows.overlap_flow import class_overlap
from flows.stopping import stop_signal_behind
from storage.fs import TMP_MARKER
from storage.tables import shard_name
from tests.support.paths import REPO

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

ROOT = REPO
# 1200 synthetic images in 8 shards
FLAGS = ["--dataset", "synthetic", "--shard-size", "150"]
STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_stray_runs() -> Iterator[None]:
    yield
    while STARTED:
        run = STARTED.pop()
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(30)


def _argv(root: Path) -> list[str]:
    return ["run", *FLAGS, "--out", str(root / "out"), "--data-dir", str(root / "data")]


def _start(argv: list[str], log: Path, module: str = "flows.cli", **env: str) -> subprocess.Popen:
    """``python -m module ARGV`` as a shell job: a session and process group of its own."""
    variables = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    variables |= {"PREFECT_LOGGING_LEVEL": "INFO", "TQDM_DISABLE": "1", **env}
    # tests.support.cli_paused imports Prefect before the CLI can set its default (a busy CI
    # machine)
    variables.setdefault(EPHEMERAL_STARTUP_VARIABLE, EPHEMERAL_STARTUP_SECONDS)
    with log.open("w") as output:  # a file, not a pipe: a full pipe would stall the run
        run = subprocess.Popen(
            [sys.executable, "-m", module, *argv],
            cwd=ROOT,
            env=variables,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    STARTED.append(run)
    return run


def _wait_for_line(log: Path, pattern: str, run: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, log.read_text()):
        assert run.poll() is None, f"run ended (exit {run.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {pattern!r} in {timeout} s"
        time.sleep(0.05)


def _wait_for_pause(marker: Path, run: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert run.poll() is None, f"run ended (exit {run.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the run did not pause in {timeout} s"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's reaping is left


def _server_port(log: Path) -> int:
    started = re.search(r"Starting temporary server on http://127\.0\.0\.1:(\d+)", log.read_text())
    return int(started[1])


def _assert_nothing_left(pids: list[int], port: int | None, out: Path) -> None:
    deadline = time.monotonic() + 10  # init reaps orphans a moment after their parent ends
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)], "a child process outlived the run"
    if port is not None:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    assert not [p for p in out.rglob("*") if TMP_MARKER in p.name]


def _tables(out: Path) -> dict[str, pa.Table]:
    """Every table of every stage, by stage and file name (one folder per stage)."""
    tables = {}
    for stage in sorted((out / "synthetic").iterdir()):
        (folder,) = stage.iterdir()
        for path in sorted(folder.glob("*.parquet")):
            tables[f"{stage.name}/{path.name}"] = pq.read_table(path)
    return tables


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pa.Table]:
    """The tables of an uninterrupted run with the same flags (in this process)."""
    root = tmp_path_factory.mktemp("reference")
    args = build_parser().parse_args(_argv(root))
    class_overlap(RunConfig(**{k: v for k, v in vars(args).items() if k != "command"}))
    return _tables(root / "out")


def _resume(argv: list[str], log: Path, **env: str) -> str:
    """Run the same command again, to the end; its output."""
    run = _start(argv, log, **env)
    run.wait(600)
    assert run.returncode == 0, log.read_text()[-3000:]
    return log.read_text()


def test_ctrl_c_mid_write_stops_everything_and_the_same_command_resumes(
    tmp_path: Path, reference: dict[str, pa.Table]
) -> None:
    argv, out, paused = _argv(tmp_path), tmp_path / "out", tmp_path / "paused"
    log = tmp_path / "stopped.log"
    # Frozen halfway through writing shard 2: half its bytes sit in a temporary file.
    run = _start(
        argv,
        log,
        "tests.support.cli_paused",
        PAUSE=f"during:{shard_name(2)}",
        PAUSE_FILE=str(paused),
    )
    _wait_for_pause(paused, run, log)
    children, port = _children(run.pid), _server_port(log)
    assert children  # the temporary server

    os.killpg(run.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    run.wait(60)
    output = log.read_text()
    assert run.returncode == 130, output[-3000:]
    assert "Crash detected" in output  # the running task was stopped, not waited for
    assert "stopped by SIGINT (Ctrl-C)" in output
    assert f"Resume: {shlex.join(['overlap', *argv])}" in output
    assert "Traceback" not in output
    _assert_nothing_left(children, port, out)
    (embeddings,) = (out / "synthetic" / "embeddings").iterdir()
    assert sorted(os.listdir(embeddings)) == [shard_name(0), shard_name(1)]  # no manifest

    resumed = _resume(argv, tmp_path / "resumed.log")
    assert "resuming: 2 of 8 shards already done" in resumed
    assert _tables(out).keys() == reference.keys()
    for name, table in _tables(out).items():
        assert table.equals(reference[name]), name


def test_sigterm_during_the_report_cancels_the_flow_run_and_the_rerun_finishes_it(
    tmp_path: Path, reference: dict[str, pa.Table]
) -> None:
    # Against the suite's Prefect server, whose records outlive the run.
    api = {"PREFECT_API_URL": str(get_current_settings().api.url)}
    argv, out, log = _argv(tmp_path), tmp_path / "out", tmp_path / "stopped.log"
    run = _start(argv, log, **api)
    # confusion done (it logs before it ends): the report runs next, for several seconds
    _wait_for_line(log, r"Task run 'confusion-\w+' - Finished in state Completed", run)
    os.kill(run.pid, signal.SIGTERM)  # what `timeout`, systemd and CI send
    run.wait(60)
    output = log.read_text()
    assert run.returncode == 143, output[-3000:]
    assert "Crash detected" in output  # the report's task run (or its creation) was stopped
    assert not re.search(r"Task run 'report-\w+' - Finished in state Completed", output)
    assert "Resume: " in output
    _assert_nothing_left(_children(run.pid), None, out)
    assert not (out / "latest.json").exists()

    name = re.search(r"Flow run '([\w-]+)' - Beginning flow run", output)[1]
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )
    assert flow_run.state.name == "Cancelled"
    assert flow_run.state.message == "stopped by SIGTERM; the same command resumes it"

    resumed = _resume(argv, tmp_path / "resumed.log", **api)
    assert re.search(r"Task run 'confusion-\w+' - Finished in state Cached", resumed)
    assert re.search(r"Task run 'report-\w+' - Finished in state Completed", resumed)
    for name, table in _tables(out).items():
        assert table.equals(reference[name]), name


def test_a_signal_that_prefect_turns_into_another_error_still_reads_as_a_stop() -> None:
    # A SIGTERM while Prefect creates a task run: its crash handling fails on the missing run.
    try:
        try:
            raise TerminationSignal(signal.SIGTERM)
        except TerminationSignal:
            raise ValueError("Task run is not set")  # noqa: B904  # as Prefect raises it
    except ValueError as error:
        assert stop_signal_behind(error) == signal.SIGTERM
    assert stop_signal_behind(ValueError("a bad input")) is None


def test_a_second_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    argv, out, paused = _argv(tmp_path), tmp_path / "out", tmp_path / "paused"
    log = tmp_path / "stopped.log"
    run = _start(
        argv,
        log,
        "tests.support.cli_paused",
        PAUSE=f"after:{shard_name(0)}",
        PAUSE_FILE=str(paused),
    )
    _wait_for_pause(paused, run, log)
    children, port = _children(run.pid), _server_port(log)
    os.killpg(run.pid, signal.SIGINT)
    _wait_for_line(log, "Crash detected", run, timeout=30)  # the first one is being handled
    os.killpg(run.pid, signal.SIGINT)
    run.wait(10)
    assert run.returncode == 130
    assert "SIGINT (Ctrl-C) again: stopping at once" in log.read_text()
    _assert_nothing_left(children, port, out)
