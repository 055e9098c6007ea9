"""The one way to declare a stage: where it writes, its cache key, its tables and manifest.

A stage module ends with ``STAGE = Stage(name, key_params=..., module=__name__)`` and a body
decorated with ``@STAGE.task()``. The body receives its upstream manifests and its typed parameters
(and, when it asks for ``target``, its output folder, for shard-by-shard writes) and returns an
``Output``; the declaration owns the rest: the cache policy with a lock per key, the early
return when a finished, intact output exists, writing the tables through the registry, and the
manifest, written last.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from prefect import Task, task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.settings import get_current_settings
from prefect.transactions import IsolationLevel

from storage import registry
from storage.code_version import code_version_of
from storage.fingerprint import hash_value
from storage.fs import Location
from storage.layout import OutputLayout
from storage.manifest import (
    MANIFEST_NAME,
    StageManifest,
    intact_or_cleared,
    read_manifest,
    record_file,
    valid_manifest,
    write_manifest,
)
from tasks.core.locks import FlockLockManager
from tasks.core.params import StageParams
from tasks.core.prefect_private import forget_cached_result, running_cache_key
from tasks.core.results import RunStages, StageInfo

# One lock per cache key, next to Prefect's result records: two runs that need the same stage
# output at once compute it once; the other waits and then reads it from the cache.
LOCKS = FlockLockManager(get_current_settings().home / "locks")
TARGET = "target"  # the body parameter that receives the stage's output folder


@dataclass(frozen=True)
class Output:
    """What a stage body returns; its ``Stage`` writes it and the manifest.

    ``tables``: registry table name -> rows to write; ``files``: other files (name -> bytes);
    ``written``: files the body wrote itself into ``target`` (name -> rows, None for non-tables);
    ``info``: facts for downstream stages. The manifest records the stage's key parameters.
    """

    tables: Mapping[str, pa.Table] = field(default_factory=dict)
    files: Mapping[str, bytes] = field(default_factory=dict)
    written: Mapping[str, int | None] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The task run's logger; the module's outside a run (a stage body called directly)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _no_params(params: StageParams) -> dict[str, Any]:
    return {}


def fingerprint(value: Any) -> Any:
    """What of one stage argument goes into its key: a manifest's content fingerprint (also in a
    mapping of manifests), the hash of anything else; never a path."""
    if isinstance(value, StageManifest):
        return value.fingerprint
    if isinstance(value, RunStages):  # keyed as the mapping of the stages that ran
        value = value.ran()
    if isinstance(value, Mapping) and all(isinstance(v, StageManifest) for v in value.values()):
        return {name: manifest.fingerprint for name, manifest in sorted(value.items())}
    return hash_value(value)


@dataclass(frozen=True)
class Stage:
    """One stage: its name, its code version, and what determines its output.

    The key is the hash of the stage's upstream arguments (manifests: their content fingerprint),
    its code version, ``key_params`` of its parameters (only those that change the output; the
    manifest records them) and ``key_inputs``, fingerprints of files that parameters name (a
    folder listing: in the key only); it names the stage's folder and is the Prefect cache key.
    The code version is derived from ``module``, the stage module, and every module it imports
    (``storage.code_version``); ``version`` gives one by hand (tests). ``info_type``: the typed
    contract of the body's ``info`` (``tasks.core.results``), checked before the manifest is
    written, so a stage that stops recording what its downstream stages read fails there.
    """

    name: str
    version: str = ""
    key_params: Callable[[Any], dict[str, Any]] = _no_params
    module: str = ""
    key_inputs: Callable[[Any], dict[str, Any]] = _no_params
    info_type: type[StageInfo] = StageInfo

    @functools.cached_property
    def code(self) -> str:
        """The code version: computed on first use, so importing a stage module parses nothing."""
        return code_version_of(self.module) if self.module else self.version

    def key(self, **arguments: Any) -> str:
        """Hash of the stage's inputs plus the output root it writes under."""
        params: StageParams = arguments["params"]
        upstream = {n: fingerprint(v) for n, v in arguments.items() if n != "params"}
        inputs = {
            "out": params.out,
            "code": self.code,
            **upstream,
            **self.key_params(params),
            **self.key_inputs(params),
        }
        return OutputLayout.at(params.out).stage_key(self.name, inputs)

    def location(self, **arguments: Any) -> Location:
        """Folder this stage writes to for these arguments.

        Inside the stage's own task run the key is the one its cache key already holds: inputs
        can be costly (an image folder's listing, a weights file's hash), so not computed twice.
        """
        return self._folder(arguments["params"], self._running_key() or self.key(**arguments))

    def _running_key(self) -> str | None:
        """The folder key of this stage's task run in progress, if that is where we are."""
        key = running_cache_key() or ""
        prefix = f"{self.name}-"  # cache_key_fn's keys; other tasks' keys are bare hex
        return key.removeprefix(prefix) if key.startswith(prefix) else None

    def _folder(self, params: StageParams, key: str) -> Location:
        return OutputLayout.at(params.out).stage_dir(params.dataset, self.name, key)

    def completed(self, **arguments: Any) -> StageManifest | None:
        """The manifest of a finished, intact earlier run with these arguments, if any."""
        return valid_manifest(self.location(**arguments))

    def cache_key_fn(self, context: TaskRunContext, parameters: dict[str, Any]) -> str:
        """Prefect cache key; forgets the cached result first when its files are gone or changed.

        Prefect does not check that a cached result's files still exist, so this does: the key
        stays the same (concurrent runs still share it), but a stale record is removed so the task
        runs again and stores a fresh one, and the run's log says why.
        """
        folder_key = self.key(**parameters)  # once: inputs may hash files (a weights file)
        key = f"{self.name}-{folder_key}"
        location = self._folder(parameters["params"], folder_key)
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
        tables: Mapping[str, int | None],
        params: Mapping[str, Any],
        info: Mapping[str, Any] | None = None,
        code: str | None = None,
    ) -> StageManifest:
        """Record the files a stage wrote (name -> row count) and write its manifest last."""
        manifest = StageManifest(
            stage=self.name,
            key=location.path.rstrip("/").rsplit("/", 1)[-1],
            url=location.url,
            code_version=self.code if code is None else code,
            params=dict(params),
            files={name: record_file(location, name, rows) for name, rows in tables.items()},
            info=dict(info or {}),
        )
        return write_manifest(manifest)

    def save(self, location: Location, output: Output, params: Mapping[str, Any]) -> StageManifest:
        """Write a body's tables (through the registry) and files, then the manifest."""
        self.info_type.model_validate(output.info)  # before its tables and manifest are written
        rows = dict(output.written)
        for name, rows_of in output.tables.items():
            spec = registry.table(name)
            rows[spec.file_name] = spec.write(location, rows_of)
        for name, data in output.files.items():
            location.write_bytes(name, data)
            rows[name] = None
        return self.finish(location, rows, params, output.info, self.code)

    def run(self, body: Callable[..., Output], **arguments: Any) -> StageManifest:
        """The earlier run's manifest when intact, else the body's output, written.

        Either way, temporary files of an interrupted write are removed first: the stage's lock
        is held, so no other run is writing here.
        """
        location = self.location(**arguments)
        if stale := location.remove_temporaries():
            _logger().info(
                "%s: removed %d unfinished file(s) of an interrupted run", self.name, len(stale)
            )
        if (done := intact_or_cleared(location)) is not None:
            return done
        if TARGET in inspect.signature(body).parameters:
            arguments = {**arguments, TARGET: location}
        output = body(**arguments)
        return self.save(location, output, self.key_params(arguments["params"]))

    def task(
        self, *, cached: bool = True, **options: Any
    ) -> Callable[[Callable[..., Output]], Task[..., StageManifest]]:
        """Decorator: a stage body -> the stage's Prefect task (named after the stage).

        ``cached``: Prefect's cache policy with a lock per key (False for a stage whose task must
        run every time, like the report's artifacts); ``options``: Prefect task options, retries.
        """

        def decorate(body: Callable[..., Output]) -> Task[..., StageManifest]:
            signature = inspect.signature(body)
            public = signature.replace(
                parameters=[p for n, p in signature.parameters.items() if n != TARGET],
                return_annotation=StageManifest,
            )

            @functools.wraps(body)
            def run(*args: Any, **kwargs: Any) -> StageManifest:
                return self.run(body, **public.bind(*args, **kwargs).arguments)

            run.__signature__ = public  # type: ignore[attr-defined]  # Prefect reads parameters
            del run.__wrapped__  # or inspect follows it back to the body's own signature
            if cached:
                options.update(cache_policy=self.cache_policy, persist_result=True)
            return task(name=self.name, **options)(run)

        return decorate
