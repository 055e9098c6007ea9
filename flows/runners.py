"""Where a run's tasks execute and where Prefect keeps its result records, from the RunConfig.

threads (the default) runs everything in the flow's process. dask and ray hand the per-shard
extraction tasks to a cluster's workers through Prefect's own task runners (``prefect-dask``,
``prefect-ray``): a local cluster of ``workers`` processes, or an existing one at
``runner_address``. Prefect's result and cache records then live under ``<out>/_prefect``, next
to the outputs, so every machine that can read the outputs also sees the cache.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.filesystems import RemoteFileSystem, WritableFileSystem
from prefect.task_runners import TaskRunner

from flows.config import RunConfig
from storage.fingerprint import hash_value
from storage.fs import Location

RESULTS_FOLDER = "_prefect"
# runner -> (modules it needs, the install extra that brings them)
ENGINES = {
    "dask": (("prefect_dask", "distributed"), "dask"),
    "ray": (("prefect_ray", "ray"), "ray"),
}


def check_runner(config: RunConfig) -> None:
    """Raise a one-line error, before any work, when the chosen runner is not installed."""
    if config.runner not in ENGINES:
        return
    modules, extra = ENGINES[config.runner]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(
            f"--runner {config.runner} needs {', '.join(missing)}, which is not installed; "
            f"pip install 'class-overlap[{extra}]' (or use --runner threads)"
        )


def on_cluster(config: RunConfig) -> bool:
    """True when extraction is spread over a Dask or Ray cluster's workers."""
    return config.runner != "threads"


def shared_results(config: RunConfig) -> bool:
    """True when Prefect's records must live with the outputs: a bucket, or several machines."""
    return on_cluster(config) or not Location(config.out).is_local


def result_storage(config: RunConfig) -> Path | WritableFileSystem:
    """``<out>/_prefect``: Prefect's result and cache records, readable wherever the outputs are.

    Prefect takes a remote result storage only as a saved block (records name it by id, so any
    process can read them back); it is saved under a name derived from the URL. It holds no
    credentials: s3fs reads them from the environment, as for the outputs.
    """
    location = Location(config.out).child(RESULTS_FOLDER)
    if location.is_local:
        return Path(location.path)
    # Records are written by other processes too: never trust a cached listing of the folder.
    block = RemoteFileSystem(basepath=location.url, settings={"use_listings_cache": False})
    block.save(f"class-overlap-results-{hash_value(location.url, 12)}", overwrite=True)
    return block


def task_runner(config: RunConfig) -> TaskRunner:
    """The Prefect task runner ``config.runner`` names (checked installed by ``check_runner``)."""
    if config.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if config.runner_address:
            return DaskTaskRunner(address=config.runner_address)
        # One thread per worker process: each worker holds one model (and, with GPUs, one GPU).
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": config.workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": ":0",
            }
        )
    if config.runner == "ray":
        from prefect_ray import RayTaskRunner

        if config.runner_address:
            return RayTaskRunner(address=config.runner_address)
        return RayTaskRunner(init_kwargs={"num_cpus": config.workers, "include_dashboard": False})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner()


def configured(flow: Flow[..., Any], config: RunConfig) -> Flow[..., Any]:
    """``flow`` with the task runner and result storage ``config`` asks for."""
    options: dict[str, Any] = {"task_runner": task_runner(config)}
    if shared_results(config):
        options["result_storage"] = result_storage(config)
    return flow.with_options(**options)
