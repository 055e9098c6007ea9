"""Stopping a local run: Ctrl-C, SIGTERM and a closed terminal end it cleanly; the rerun resumes.

The first SIGINT, SIGTERM or SIGHUP raises ``RunStopped`` in the main thread, where the flow and
its tasks run, so the running task stops where it is: an atomic write in progress removes its
temporary file, finished shards and stages stay. Prefect's own SIGTERM bridge, installed while a
flow runs, raises its ``TerminationSignal`` first and then hands the signal back to this handler.
The CLI then marks the flow run Cancelled with the reason, lets Prefect's log and event workers
drain (the temporary server stops last, at exit) and exits 128 + the signal's number. A second
signal ends the process at once, the temporary server with it; a half-written file it may leave
is removed by the next run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any
from uuid import UUID

STOP_SIGNALS = {
    signal.SIGINT: "SIGINT (Ctrl-C)",
    signal.SIGTERM: "SIGTERM",
    signal.SIGHUP: "SIGHUP (terminal closed)",
}
# Marking the run Cancelled must not hold up the exit when the server no longer answers.
API_TIMEOUT_SECONDS = 5.0


class RunStopped(KeyboardInterrupt):
    """A stop signal arrived: raised in the main thread to end the running task and the flow.

    A KeyboardInterrupt, so that code written to let Ctrl-C through lets this through too.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        """The signal, as a user knows it."""
        return STOP_SIGNALS.get(self.signum, signal.Signals(self.signum).name)

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by this signal: 128 + its number."""
        return 128 + self.signum


class StopOnSignals:
    """The handler of the stop signals for one run, and what it learnt about the run."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.flow_run_id: UUID | None = None
        # processes that must not outlive this one (the temporary server): killed on a 2nd signal
        self.children: list[subprocess.Popen] = []

    def remember_flow_run(self, flow: Any, flow_run: Any, state: Any) -> None:
        """A Prefect ``on_running`` hook: the flow run to mark Cancelled if the run is stopped."""
        self.flow_run_id = flow_run.id

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # a second signal: no more waiting
            # straight to the terminal: print() may be Prefect's logger inside a flow
            os.write(2, f"overlap: {STOP_SIGNALS[signum]} again: stopping at once\n".encode())
            for child in self.children:
                child.kill()
            os._exit(128 + signum)
        self.received = signum
        raise RunStopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopOnSignals]:
    """Handle SIGINT, SIGTERM and SIGHUP in this block (main thread only), then restore.

    Installed whatever the inherited disposition: a command started with ``&`` from a script
    inherits SIGINT ignored, and ``kill -INT`` must stop it all the same.
    """
    handler = StopOnSignals()
    if threading.current_thread() is not threading.main_thread():  # Python allows no handler
        yield handler
        return
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield handler
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def stop_signal_behind(error: BaseException) -> int | None:
    """The stop signal in ``error``'s chain (causes and contexts), if any.

    A signal that lands while Prefect creates a task run comes back as another error (Prefect's
    crash handling fails with "Task run is not set"): that run was still stopped by the signal.
    """
    from prefect.exceptions import TerminationSignal  # raised by Prefect's SIGTERM bridge

    seen: set[int] = set()
    chain: BaseException | None = error
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, RunStopped):
            return chain.signum
        if isinstance(chain, TerminationSignal):
            return chain.signal
        chain = chain.__cause__ or chain.__context__
    return None


def mark_cancelled(flow_run_id: UUID, message: str) -> bool:
    """Record the stopped flow run, and any subflow run of it still open, as Cancelled.

    Prefect records a run interrupted by a signal as Crashed, which reads as a failure of the
    tool; this one was stopped on purpose. Returns False when the API did not answer.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.states import Cancelled

    try:
        with get_client(sync_client=True, httpx_settings={"timeout": API_TIMEOUT_SECONDS}) as c:
            children = c.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
                )
            )
            open_children = [r.id for r in children if not (r.state and r.state.is_completed())]
            for run_id in (*open_children, flow_run_id):
                c.set_flow_run_state(run_id, Cancelled(message=message), force=True)
    except Exception:  # the server is gone (killed with the process group): nothing to record
        return False
    return True
