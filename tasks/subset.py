"""Write the subset of overlapping classes (images + metadata) and its train/val/test splits."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prefect import get_run_logger

from storage import registry
from storage.fs import Location
from storage.layout import CLASS_FOLDERS_FILE, class_folders, class_folders_tsv
from storage.manifest import StageManifest
from storage.tables import stage_shards
from tasks.core.params import SubsetParams
from tasks.core.results import ImagesInfo, SubsetInfo
from tasks.core.stage import Output, Stage
from tasks.sources.sharded_load import with_image_bytes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class NoOverlapError(ValueError):
    """The overlap rule flagged no classes, so there is no subset to write or train on."""


def subset_rows(shards: Iterable[pa.Table], original_labels: Sequence[int]) -> pa.Table:
    """``subset``: the images rows (all columns) of the flagged classes, by sample_id, read one
    shard at a time, plus ``new_label`` 0..K-1 in the order of ``original_labels``."""
    new_of = np.full(max(original_labels) + 1, -1, dtype=np.int32)
    new_of[np.asarray(original_labels)] = np.arange(len(original_labels), dtype=np.int32)
    wanted = pa.array(np.asarray(original_labels, dtype=np.int32))
    parts = [shard.filter(pc.is_in(shard.column("label"), value_set=wanted)) for shard in shards]
    rows = pa.concat_tables(parts).sort_by("sample_id")
    new_label = new_of[rows.column("label").to_numpy()]
    return rows.append_column("new_label", pa.array(new_label, pa.int32()))


def _stratified(index: np.ndarray, labels: np.ndarray, fraction: float, seed: int, what: str):
    """Split ``index`` into (rest, held) with ``fraction`` held out per class, or say why not."""
    # here, not at import: a cached run never needs scikit-learn
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(index, test_size=fraction, stratify=labels, random_state=seed)
    except ValueError:
        counts = np.bincount(labels)
        # scikit-learn's wording ("The least populated class in y has only 1 member") is not
        # for the user: say which fix works instead.
        raise ValueError(
            f"cannot hold out {fraction:g} of {len(index)} images as {what}, stratified over "
            f"{np.count_nonzero(counts)} classes (smallest has {counts[counts > 0].min()}, "
            f"each needs at least 2 and enough for the share); add images to the small classes, "
            f"use an overlap rule that leaves them out, or change --{what}-fraction"
        ) from None


def assign_splits(
    source_splits: np.ndarray,
    labels: np.ndarray,
    *,
    has_test_split: bool,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> np.ndarray:
    """train/val/test per row: source test kept; val (and test without one) stratified, seeded.

    Rows must come in a stable order (by sample_id) for the same seed to give the same split.
    """
    source_splits = np.asarray(source_splits, dtype=object)
    labels = np.asarray(labels)
    out = np.full(len(labels), "train", dtype=object)
    pool = np.arange(len(labels))
    if has_test_split:
        out[source_splits == "test"] = "test"
        pool = pool[source_splits != "test"]
    else:
        pool, test = _stratified(pool, labels[pool], test_fraction, seed, "test")
        out[test] = "test"
    _, val = _stratified(pool, labels[pool], val_fraction, seed, "val")
    out[val] = "val"
    return out


def splits_table(subset: pa.Table, split: np.ndarray) -> pa.Table:
    """``splits``: a row per subset image; sample_id, split (train/val/test), label (the
    new_label), class_name, original_label."""
    return pa.table(
        {
            "sample_id": subset.column("sample_id"),
            "split": pa.array(split.tolist(), pa.string()),
            "label": subset.column("new_label"),
            "class_name": subset.column("class_name"),
            "original_label": subset.column("label"),
        }
    )


def as_png(data: bytes) -> bytes:
    """PNG bytes of an encoded image (JPEG and others re-encoded, PNG kept as is)."""
    if data.startswith(PNG_MAGIC):
        return data
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, format="PNG")
    return buffer.getvalue()


def export_pngs(location: Location, subset: pa.Table, split: np.ndarray) -> int:
    """Write ``pngs/<split>/<class folder>/<sample_id>.png``; return the file count.

    Class folders come from ``class_folders`` (unique and reversible); ``pngs/class_folders.tsv``
    maps each folder back to its class name.
    """
    images = subset.column("image").combine_chunks().field("bytes").to_pylist()
    ids = subset.column("sample_id").to_pylist()
    names = subset.column("class_name").to_pylist()
    folders = class_folders(sorted(set(names)), 120)
    location.child("pngs").write_bytes(CLASS_FOLDERS_FILE, class_folders_tsv(folders))
    for sample_id, name, part, data in zip(ids, names, split, images, strict=True):
        folder = location.child("pngs", part, folders[name])
        folder.write_bytes(f"{sample_id}.png", as_png(data))
    return len(ids)


def _key_params(params: SubsetParams) -> dict[str, Any]:
    return params.model_dump(include={"seed", "val_fraction", "test_fraction", "export_pngs"})


STAGE = Stage("subset", key_params=_key_params, module=__name__, info_type=SubsetInfo)


@STAGE.task()
def subset_task(
    images: StageManifest, overlap: StageManifest, params: SubsetParams, target: Location
) -> Output:
    """Images and metadata of the overlapping classes, with seeded stratified splits."""
    flagged = registry.table("overlap_classes").read(overlap.location, ["label"])
    original = sorted(set(flagged.column("label").to_pylist()))
    if not original:
        raise NoOverlapError(
            f"the overlap rule ({overlap.params.get('rule')}) flagged no classes, so there is "
            "no subset to write or classifier to train; loosen it (lower --overlap-k, lower "
            "--overlap-threshold, or --overlap-rule topk)"
        )
    # read-in-place sources (parquet:, webdataset:): the subset's images are copied here
    subset = with_image_bytes(subset_rows(stage_shards(images), original))
    has_test = bool(ImagesInfo.of(images).has_test_split)
    split = assign_splits(
        subset.column("split").to_numpy(zero_copy_only=False),
        subset.column("new_label").to_numpy(),
        has_test_split=has_test,
        val_fraction=params.val_fraction,
        test_fraction=params.test_fraction,
        seed=params.seed,
    )
    target.child("pngs").remove_tree()  # an interrupted export must not leave stale files
    pngs = export_pngs(target, subset, split) if params.export_pngs else 0
    info = _subset_info(images.info, original, split, has_test, pngs)
    get_run_logger().info(
        "subset: %d classes, %d images (%s)", len(original), subset.num_rows, info["split_counts"]
    )
    return Output(
        tables={"subset": subset, "splits": splits_table(subset, split)},
        info=info,
    )


def _subset_info(
    source: dict[str, Any], original: list[int], split: np.ndarray, has_test: bool, pngs: int
) -> dict[str, Any]:
    """Manifest info: the subset's classes by new_label, where they came from, split sizes."""
    names = source["class_names"]
    coarse, coarse_names = source.get("coarse_labels"), source.get("coarse_names")
    values, counts = np.unique(split.astype(str), return_counts=True)
    return {
        "class_names": [names[i] for i in original],
        "original_labels": original,
        "coarse_names": [coarse_names[coarse[i]] for i in original]
        if coarse is not None and coarse_names is not None
        else None,
        "num_classes": len(original),
        "source_has_test_split": has_test,
        "split_counts": {str(v): int(c) for v, c in zip(values, counts, strict=True)},
        "png_files": pngs,
        "png_layout": "pngs/<split>/<class_name>/<sample_id>.png" if pngs else None,
    }
