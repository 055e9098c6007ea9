"""The one place that uses Prefect internals; tests/test_stage.py fails loudly when they change.

Prefect 3 has no public call that forgets one cached result (``refresh_cache`` reruns every
task run of a task, not one key) nor one that tells a cache key function's key to the task body,
so both are done here, against the attributes of the tested release (pyproject.toml pins the
lower bound to it).
"""

from __future__ import annotations

import os
import posixpath

import fsspec
from prefect.context import TaskRunContext
from prefect.results import get_default_result_storage
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
