"""Images stage: any supported dataset -> the sharded ``images`` table."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path
from types import ModuleType
from typing import Any

from prefect import task
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import unmapped

from storage import registry
from storage.escape import terminal
from storage.fingerprint import hash_value
from storage.fs import Location
from storage.manifest import StageManifest, valid_manifest
from tasks.core.dataset_kinds import argument_of, kind_of
from tasks.core.params import ImagesParams, StageParams
from tasks.core.results import ImagesInfo
from tasks.core.stage import Output, Stage
from tasks.sources import (
    DatasetError,
    Source,
    cifar,
    folder_delta,
    idx,
    imagefolder,
    sharded_load,
    synthetic,
)
from tasks.sources.folder_delta import ReusingImageFolderSource
from tasks.sources.parquet import ParquetColumns
from tasks.sources.sharded_load import INDEX_FOLDER, ShardedSource
from tasks.sources.shards import SourceShard


def folder_of(dataset: str) -> Path | None:
    """The path of an ``imagefolder:PATH`` dataset, else None."""
    kind = kind_of(dataset)
    if kind is None or kind.name != "imagefolder":
        return None
    return Path(argument_of(dataset)).expanduser()


def listing_fingerprint(root: Path) -> str:
    """Cheap fingerprint of a folder's files (relative path, size, mtime), no reading of bytes."""
    entries = []
    for dirpath, _dirs, files in sorted(os.walk(root)):
        for name in sorted(files):
            stat = os.stat(os.path.join(dirpath, name))
            entries.append(
                (os.path.relpath(os.path.join(dirpath, name), root), stat.st_size, stat.st_mtime_ns)
            )
    return hash_value(entries)


# The modules the kinds' rows name: imported here, so that this stage's code version covers them
# (tests check that every row's module is one of these).
SOURCE_MODULES: dict[str, ModuleType] = {
    module.__name__.rpartition(".")[2]: module for module in (cifar, folder_delta, idx, synthetic)
}


def open_source(params: ImagesParams) -> Source:
    """The source for ``params.dataset``; downloads CIFAR and (Fashion-)MNIST when absent."""
    kind = kind_of(params.dataset)
    if kind is None or kind.source is None:
        raise DatasetError(f"{terminal(params.dataset)} is read in place, not opened whole")
    source = SOURCE_MODULES[kind.source].open_dataset(params, kind.name)
    if kind.built_in and params.max_per_class is not None:
        return source.per_class(params.max_per_class, params.seed)
    return source


def check_dataset(params: StageParams) -> int | None:
    """Cheap checks before any work: an image folder must exist and hold 2+ classes of images.

    Returns the dataset's number of classes when known without reading images, else None.
    """
    root = folder_of(params.dataset)
    if root is not None:
        return len(imagefolder.scan_imagefolder(root)[0])
    sharded = ShardedSource.of(params) if isinstance(params, ImagesParams) else None
    if sharded is not None:  # listing, credentials, columns, --class-names: all cheap
        sharded.check()
    kind = kind_of(params.dataset)
    return None if kind is None else kind.num_classes


def _key_params(params: ImagesParams) -> dict[str, Any]:
    inputs: dict[str, Any] = {"dataset": params.dataset, "shard_size": params.shard_size}
    if params.dataset == "synthetic":
        inputs["seed"] = params.seed
        if params.synthetic_defects:  # a key field only when set: plain runs hash as before
            inputs["defects"] = True
    if params.rescan and folder_of(params.dataset) is not None:
        inputs["rescan"] = True  # its own folder: a cached load must not stand in for a re-read
    if params.max_per_class is not None:  # key fields only when set, as above
        inputs["max_per_class"] = params.max_per_class
        inputs["seed"] = params.seed
    if params.max_image_pixels != ImagesParams.model_fields["max_image_pixels"].default:
        inputs["max_image_pixels"] = params.max_image_pixels  # a key field only when set
    return inputs


def _input_fingerprints(params: ImagesParams) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    root = folder_of(params.dataset)
    if root is not None:
        inputs["files"] = listing_fingerprint(root)
    sharded = ShardedSource.of(params)
    if sharded is not None:  # sizes and ETags or mtimes of the source's files, flags, names
        inputs["source"] = sharded.key_inputs(sharded.list())
    return inputs


STAGE = Stage(
    "images",
    key_params=_key_params,
    module=__name__,
    key_inputs=_input_fingerprints,
    info_type=ImagesInfo,
)


DETERMINISTIC = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
# HTTP answers that will not change on a retry: a wrong mirror URL (404), a refused request (403).
RETRIED_HTTP_4XX = (408, 425, 429)


def _deterministic(error: BaseException) -> bool:
    if isinstance(error, urllib.error.HTTPError):
        return 400 <= error.code < 500 and error.code not in RETRIED_HTTP_4XX
    return isinstance(error, DETERMINISTIC)


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry network and storage hiccups only; a bad parameter or a 4xx answer fails at once."""
    error = state.result(raise_on_failure=False)
    if not isinstance(error, OSError):
        return False
    chain: BaseException | None = error
    while chain is not None:  # download errors wrap the HTTP error that caused them
        if _deterministic(chain):
            return False
        chain = chain.__cause__
    return True


def count_labels(counts: dict[int, int], labels: list[int]) -> None:
    """Add a chunk's labels to running per-class counts."""
    for label in labels:
        counts[label] = counts.get(label, 0) + 1


@STAGE.task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=transient,
)
def images_task(params: ImagesParams, target: Location) -> Output:
    """Download or read the dataset and write it as the sharded ``images`` table."""
    logger = get_run_logger()
    sharded = ShardedSource.of(params)
    if sharded is not None:  # read in place; a killed load resumes from the shards indexed
        target.remove_temporaries()
        written, info = sharded_load.load_sharded(sharded, target, params.dataset)
        logger.info(
            "%s: %d images in %d classes, read in place",
            terminal(params.dataset),
            info["rows"],
            len(info["class_names"]),
        )
        if skipped := info["skipped_files"]:
            logger.warning(
                "%s: skipped %d unreadable shard(s) or undecodable image(s), listed in the "
                "manifest's skipped_files: %s",
                terminal(params.dataset),
                len(skipped),
                ", ".join(terminal(name) for name in skipped[:5])
                + (" ..." if len(skipped) > 5 else ""),
            )
        return Output(written=written, info=info)
    target.remove_tree()  # whatever is there is incomplete, or it would have been reused
    source = open_source(params)
    shards: dict[str, int | None] = {}
    counts: dict[int, int] = {}
    spec = registry.table("images")
    for index, chunk in enumerate(source.chunks(params.shard_size)):
        shards[spec.file(index)] = spec.write(target, chunk, shard=index)
        count_labels(counts, chunk.column("label").to_pylist())
    empty = [n for i, n in enumerate(source.info.class_names) if counts.get(i, 0) == 0]
    if len(counts) < 2 or empty:
        target.remove_tree()
        raise DatasetError(
            f"{terminal(params.dataset)}: classes without readable images: "
            f"{', '.join(map(terminal, empty[:10]))}; add images or remove those folders"
        )
    skipped = getattr(source, "skipped", [])
    info = {**source.info.as_dict(), "rows": sum(counts.values()), "skipped_files": skipped}
    if hidden := getattr(source, "hidden", []):
        info["skipped_folders"] = hidden
        logger.warning(
            "%s: skipped %d hidden folder(s), not classes (names start with '.'): %s; rename "
            "one to include its images",
            terminal(params.dataset),
            len(hidden),
            ", ".join(map(terminal, hidden)),
        )
    logger.info("%s: %d images in %d classes", terminal(params.dataset), info["rows"], len(counts))
    if isinstance(source, ReusingImageFolderSource) and source.delta is not None:
        shards.update(source.write_index(target))
        info["files"] = source.delta.counts()
        changes = source.delta.counts()
        logger.info("%s: files %s since the last load", terminal(params.dataset), changes)
    return Output(written=shards, info=info)


@task(
    name="index source shard",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=transient,
    task_run_name="index {position}",
)
def index_shard_task(
    source: ShardedSource,
    columns: ParquetColumns | None,
    shard: SourceShard,
    position: int,
    folder: Location,
) -> dict[str, Any]:
    """Index one source shard into ``folder`` (its labels and pointers), unless it is there."""
    index = sharded_load.index_into(source, columns, shard, position, folder)
    rows = 0 if index.table is None else index.table.num_rows
    return {"shard": shard.url, "rows": rows, "error": index.error}


def images(params: ImagesParams, on_cluster: bool) -> StageManifest:
    """The images stage: on a cluster, a sharded source is indexed one task per shard first."""
    sharded = ShardedSource.of(params)
    target = STAGE.location(params=params) if on_cluster and sharded is not None else None
    if target is not None and valid_manifest(target) is None:
        shards_found, columns = sharded.check()
        futures = index_shard_task.map(
            unmapped(sharded),
            unmapped(columns),
            shards_found,
            list(range(len(shards_found))),
            unmapped(target.child(INDEX_FOLDER)),
        )
        wait(futures)
        done = [future.result() for future in futures]  # raises the first shard's failure
        get_run_logger().info(
            "indexed %d source shard(s) on the cluster (%d unreadable)",
            len(done),
            sum(d["error"] is not None for d in done),
        )
    return images_task(params)
