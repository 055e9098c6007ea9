"""The one place that uses Prefect internals; tests/tasks/core/test_stage.py fails loudly when they
change.

Prefect 3 has no public call that forgets one cached result (``refresh_cache`` reruns every
task run of a task, not one key) nor one that tells a cache key function's key to the task body,
so both are done here, against the attributes of the tested release (pyproject.toml pins the
lower bound to it). The temporary API server is started here too, in a session of its own
(tests/flows/test_stopping.py fails when that changes).
"""

from __future__ import annotations

import functools
import os
import posixpath
import subprocess
import types
from typing import Any
from unittest import mock

import fsspec
from prefect.context import TaskRunContext
from prefect.results import get_default_result_storage
from prefect.settings import get_current_settings
from prefect.transactions import get_transaction


def running_cache_key() -> str | None:
    """The cache key of the task run in progress (its transaction's key), if any."""
    transaction = get_transaction()
    return None if transaction is None else transaction.key


def forget_cached_result(context: TaskRunContext | None, key: str) -> bool:
    """Delete Prefect's cached result record for ``key`` (in memory and in result storage).

    Returns True when there was one to forget.
    """
    store = getattr(context, "result_store", None)
    if store is None:
        return False
    found = store.cache is not None and store.cache.pop(key, None) is not None
    storage = store.result_storage or get_default_result_storage(_sync=True)
    for block in (storage, store.metadata_storage):
        basepath = getattr(block, "basepath", None)
        if basepath is None:
            continue
        fs, path = fsspec.core.url_to_fs(posixpath.join(os.path.expanduser(str(basepath)), key))
        if fs.exists(path):
            fs.rm(path)
            found = True
    return found


def start_temporary_server() -> subprocess.Popen[Any] | None:
    """Start Prefect's temporary API server now, when no PREFECT_API_URL is set; its process.

    Prefect's clients ask ``SubprocessASGIServer()`` for the server: this one is registered as
    that instance, so they all use it, and Prefect stops it at exit (last: its atexit handler is
    registered first, so its log and event workers drain into it before).
    """
    if get_current_settings().api.url:
        return None
    import prefect.server.api.server as prefect_server  # the whole server: only where one starts

    class OwnSessionServer(prefect_server.SubprocessASGIServer):
        """Prefect's temporary API server, started in a session (and process group) of its own.

        In the run's process group it would get the terminal's Ctrl-C too and quit at once,
        before the run could record that it was stopped (Prefect's client then retries a server
        that is gone). Prefect builds the command and its environment; only the session differs.
        """

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            own_session = types.SimpleNamespace(
                Popen=functools.partial(subprocess.Popen, start_new_session=True)
            )
            with mock.patch.object(prefect_server, "subprocess", own_session):
                return super()._run_uvicorn_command()

    server = OwnSessionServer()
    server.start()
    return server.server_process
