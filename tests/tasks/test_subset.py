"""Subset of overlapping classes and its train/val/test splits."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from PIL import Image
from prefect.logging import disable_run_logger

from storage.schemas.subset import SPLITS, SUBSET
from storage.tables import read_parquet, stage_shards
from tasks.subset import NoOverlapError, as_png, assign_splits, subset_rows, subset_task
from tests.support.builders import ovl_config, ovl_images_stage, ovl_overlap_stage

NAMES = ["apple", "bear", "boy", "girl", "man"]


def _dataset(per_class: int = 40, test_every: int = 5) -> tuple[np.ndarray, list[str]]:
    labels = np.tile(np.arange(5), per_class)
    # Every test_every-th round of the classes is test: the same share of every class.
    splits = ["test" if (i // 5) % test_every == 0 else "train" for i in range(len(labels))]
    return labels, splits


def test_subset_rows_relabel_in_original_order(tmp_path: Path) -> None:
    labels, splits = _dataset(per_class=4)
    images = ovl_images_stage(tmp_path, labels, splits, NAMES, rows_per_shard=7)
    rows = subset_rows(stage_shards(images), [2, 3, 4])
    assert rows.column("sample_id").to_pylist() == sorted(rows.column("sample_id").to_pylist())
    pairs = set(
        zip(rows.column("label").to_pylist(), rows.column("new_label").to_pylist(), strict=True)
    )
    assert pairs == {(2, 0), (3, 1), (4, 2)}
    assert rows.num_rows == 12


def test_source_test_split_is_kept_and_val_is_stratified() -> None:
    labels, splits = _dataset(per_class=50)
    split = assign_splits(
        np.array(splits), labels, has_test_split=True, val_fraction=0.2, test_fraction=0.3, seed=0
    )
    assert (split[np.array(splits) == "test"] == "test").all()
    assert set(split[np.array(splits) == "train"]) == {"train", "val"}
    for label in range(5):
        val = np.count_nonzero((split == "val") & (labels == label))
        assert val == 8  # 0.2 of each class's 40 training images


def test_splits_are_reproducible_and_depend_on_the_seed() -> None:
    labels, splits = _dataset()
    kwargs = {"has_test_split": True, "val_fraction": 0.25, "test_fraction": 0.2}
    first = assign_splits(np.array(splits), labels, seed=1, **kwargs)
    again = assign_splits(np.array(splits), labels, seed=1, **kwargs)
    other = assign_splits(np.array(splits), labels, seed=2, **kwargs)
    assert (first == again).all()
    assert not (first == other).all()


def test_three_way_split_without_source_test() -> None:
    labels = np.repeat(np.arange(4), 50)
    split = assign_splits(
        np.array(["train"] * 200),
        labels,
        has_test_split=False,
        val_fraction=0.1,
        test_fraction=0.2,
        seed=0,
    )
    for label in range(4):
        mine = split[labels == label]
        assert [np.count_nonzero(mine == s) for s in ("train", "val", "test")] == [36, 4, 10]


def test_too_small_classes_get_a_clear_error() -> None:
    labels = np.array([0, 0, 0, 1])
    with pytest.raises(
        ValueError, match=r"cannot hold out 0\.5 of 4 images as test.*smallest has 1"
    ):
        assign_splits(
            np.array(["train"] * 4),
            labels,
            has_test_split=False,
            val_fraction=0.1,
            test_fraction=0.5,
            seed=0,
        )


def test_as_png_keeps_png_and_converts_jpeg(tmp_path: Path) -> None:
    jpeg = tmp_path / "x.jpg"
    Image.new("RGB", (3, 3), (10, 20, 30)).save(jpeg, format="JPEG")
    converted = as_png(jpeg.read_bytes())
    assert converted.startswith(b"\x89PNG") and as_png(converted) == converted


def test_task_writes_subset_splits_and_pngs(tmp_path: Path) -> None:
    labels, splits = _dataset()
    images = ovl_images_stage(
        tmp_path,
        labels,
        splits,
        NAMES,
        coarse_labels=[0, 1, 2, 2, 2],
        coarse_names=["fruit", "carnivores", "people"],
    )
    overlap = ovl_overlap_stage(tmp_path, [4, 2, 3], NAMES)
    config = ovl_config(tmp_path, export_pngs=True, val_fraction=0.25)
    with disable_run_logger():
        manifest = subset_task.fn(images, overlap, config.params.subset)
    assert manifest.info["class_names"] == ["boy", "girl", "man"]
    assert manifest.info["original_labels"] == [2, 3, 4]
    assert manifest.info["coarse_names"] == ["people"] * 3
    assert manifest.info["split_counts"] == {"test": 24, "train": 72, "val": 24}
    subset_path, splits_path = manifest.path("subset.parquet"), manifest.path("splits.parquet")
    assert read_parquet(manifest.location, "subset.parquet").schema.equals(SUBSET)
    assert pl.read_parquet(subset_path).columns == SUBSET.names
    assert duckdb.sql(f"SELECT * FROM '{splits_path}'").columns == SPLITS.names
    splits_table = pl.read_parquet(splits_path)
    assert splits_table["sample_id"].is_unique().all() and splits_table.height == 120
    assert splits_table["label"].unique().sort().to_list() == [0, 1, 2]
    one = splits_table.row(0, named=True)
    png = manifest.location.child("pngs", one["split"], one["class_name"])
    assert png.exists(f"{one['sample_id']}.png")
    assert manifest.info["png_files"] == 120


def test_no_flagged_class_stops_with_a_clear_message(tmp_path: Path) -> None:
    labels, splits = _dataset(per_class=2)
    images = ovl_images_stage(tmp_path, labels, splits, NAMES)
    overlap = ovl_overlap_stage(tmp_path, [], NAMES)
    with disable_run_logger(), pytest.raises(NoOverlapError, match="flagged no classes"):
        subset_task.fn(images, overlap, ovl_config(tmp_path))
