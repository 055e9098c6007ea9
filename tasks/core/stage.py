"""What every stage shares: where it writes, its cache key, and the manifest it returns."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import fsspec
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.results import get_default_result_storage
from prefect.settings import get_current_settings
from prefect.transactions import IsolationLevel, get_transaction

from storage.fs import Location
from storage.layout import OutputLayout
from storage.manifest import (
    MANIFEST_NAME,
    StageManifest,
    read_manifest,
    record_file,
    valid_manifest,
    write_manifest,
)
from tasks.core.locks import FlockLockManager

# One lock per cache key, next to Prefect's result records: two runs that need the same stage
# output at once compute it once; the other waits and then reads it from the cache.
LOCKS = FlockLockManager(get_current_settings().home / "locks")


class HasOutput(Protocol):
    """A configuration that names an output root and a dataset (RunConfig does)."""

    out: str
    dataset: str


@dataclass(frozen=True)
class Stage:
    """One stage: its name, what determines its output, and where that output lives.

    ``inputs`` maps the task's parameters to a JSON-able dict of everything that determines the
    output: upstream fingerprints, the parameters that matter and a code version, never a bare
    path. Its hash names the stage's folder and is the Prefect cache key.
    """

    name: str
    inputs: Callable[..., dict[str, Any]]

    def key(self, **params: Any) -> str:
        """Hash of the stage's inputs plus the output root it writes under."""
        config: HasOutput = params["config"]
        inputs = {"out": config.out, **self.inputs(**params)}
        return OutputLayout.at(config.out).stage_key(self.name, inputs)

    def location(self, **params: Any) -> Location:
        """Folder this stage writes to for these parameters.

        Inside the stage's own task run the key is the one its cache key already holds: inputs
        can be costly (an image folder's listing, a weights file's hash), so not computed twice.
        """
        return self._folder(params["config"], self._running_key() or self.key(**params))

    def _running_key(self) -> str | None:
        """The folder key of this stage's task run in progress, if that is where we are."""
        transaction = get_transaction()
        prefix = f"{self.name}-"  # cache_key_fn's keys; other tasks' keys are bare hex
        if transaction is None or not (transaction.key or "").startswith(prefix):
            return None
        return transaction.key.removeprefix(prefix)

    def _folder(self, config: HasOutput, key: str) -> Location:
        return OutputLayout.at(config.out).stage_dir(config.dataset, self.name, key)

    def completed(self, **params: Any) -> StageManifest | None:
        """The manifest of a finished, intact earlier run with these parameters, if any."""
        return valid_manifest(self.location(**params))

    def cache_key_fn(self, context: TaskRunContext, parameters: dict[str, Any]) -> str:
        """Prefect cache key; forgets the cached result first when its files are gone or changed.

        Prefect does not check that a cached result's files still exist, so this does: the key
        stays the same (concurrent runs still share it), but a stale record is removed so the task
        runs again and stores a fresh one, and the run's log says why.
        """
        folder_key = self.key(**parameters)  # once: inputs may hash files (a weights file)
        key = f"{self.name}-{folder_key}"
        location = self._folder(parameters["config"], folder_key)
        manifest = read_manifest(location)
        problems = (
            manifest.problems() if manifest else [f"{MANIFEST_NAME} is missing or unreadable"]
        )
        if problems and (forget_cached_result(context, key) or manifest is not None):
            get_run_logger(context).warning(
                "%s: outputs at %s are missing or changed (%s); recomputing",
                self.name,
                location.url,
                "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""),
            )
        return key

    @property
    def cache_policy(self) -> CachePolicy:
        """``cache_key_fn`` with a lock per key: concurrent runs compute the stage once."""
        return CachePolicy.from_cache_key_fn(self.cache_key_fn).configure(
            isolation_level=IsolationLevel.SERIALIZABLE, lock_manager=LOCKS
        )

    def finish(
        self,
        location: Location,
        tables: dict[str, int | None],
        params: dict[str, Any],
        info: dict[str, Any] | None = None,
        code: str = "",
    ) -> StageManifest:
        """Record the files a stage wrote (name -> row count) and write its manifest last."""
        manifest = StageManifest(
            stage=self.name,
            key=location.path.rstrip("/").rsplit("/", 1)[-1],
            url=location.url,
            code_version=code,
            params=params,
            files={name: record_file(location, name, rows) for name, rows in tables.items()},
            info=info or {},
        )
        return write_manifest(manifest)


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
