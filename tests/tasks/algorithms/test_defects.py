"""Planted defects: the synthetic dataset's duplicates, leaks and flipped labels are found back
from real (random-weight ViT) embeddings; an image folder's repeated file is reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from tasks.algorithms import duplicates as dp
from tasks.algorithms import label_noise as ln
from tasks.algorithms import neighbours as nb
from tasks.models import models
from tasks.models.embed import Extractor
from tasks.sources import synthetic
from tasks.sources.imagefolder import ImageFolderSource

SEEDS = (0, 1, 2)


def _extractor(seed: int) -> Extractor:
    """The demo run's model: a random-weight ViT-Tiny at 64 px, bf16 where the CPU has it."""
    device = torch.device("cpu")
    precision = models.resolve_precision("auto", device)
    model = models.build_model("vit_tiny_patch16_224", pretrained=False, image_size=64, seed=seed)
    prepared = models.prepare(model, device, precision)
    return Extractor(prepared, models.preprocessing_of(model), device, precision, batch_size=128)


def _keys(table: pa.Table) -> pa.Table:
    return table.select(["sample_id", "split", "label", "class_name"])


def _analyse(images: pa.Table, vectors: np.ndarray, names: list[str]) -> tuple[pa.Table, pa.Table]:
    """near_duplicates and label_suspects of embedded images, read in shards of 300 rows."""
    read = lambda: (vectors[i : i + 300] for i in range(0, len(vectors), 300))  # noqa: E731
    found = nb.knn(read, len(vectors), vectors.shape[1], gpu=False).neighbours
    keys = _keys(images)
    return dp.near_duplicates(found, keys), ln.label_suspects(found, keys, names)


def _pairs(duplicates: pa.Table) -> list[tuple[int, int, str]]:
    """(sample_id_a, sample_id_b, kind) of each reported pair."""
    columns = (duplicates[c].to_pylist() for c in ("sample_id_a", "sample_id_b", "kind"))
    return list(zip(*columns, strict=True))


def _precision_recall(found: set, planted: set) -> tuple[float, float]:
    hits = len(found & planted)
    return hits / max(len(found), 1), hits / len(planted)


def test_defects_are_off_by_default_and_leave_the_original_rows_alone() -> None:
    plain, planted = synthetic.make_synthetic(3), synthetic.make_synthetic(3, with_defects=True)
    assert plain.info.planted_defects == {}
    n, record = len(plain), planted.info.planted_defects
    np.testing.assert_array_equal(planted.images[:n], plain.images)
    flipped = {row: (old, new) for row, old, new in record["flipped"]}
    changed = np.flatnonzero(planted.labels[:n] != plain.labels)
    assert sorted(flipped) == changed.tolist() and len(changed) > 0
    twins = {frozenset(p) for p in synthetic.planted_pairs(3)}
    for row, (old, new) in flipped.items():
        assert plain.labels[row] == old and new != old and frozenset((old, new)) not in twins
    for source, copy, kind, how in record["duplicates"]:
        assert copy >= n and plain.splits[source] == "train"
        difference = np.abs(planted.images[copy].astype(int) - plain.images[source]).mean()
        assert (difference == 0) == (how == "exact") and difference < 8
        assert planted.splits[copy] == ("test" if kind == "train_test_leak" else "train")
        assert (planted.labels[copy] != plain.labels[source]) == (kind == "cross_class")
    cross = [copy for _, copy, kind, _ in record["duplicates"] if kind == "cross_class"]
    assert record["mislabelled"] == sorted([*flipped, *cross])


@pytest.mark.parametrize("seed", SEEDS)
def test_both_tables_find_the_plants_back(seed: int) -> None:
    source = synthetic.make_synthetic(seed, with_defects=True)
    images = pa.concat_tables(source.chunks(500))
    vectors = _extractor(seed).embed_arrays(torch.from_numpy(source.images).permute(0, 3, 1, 2))
    duplicates, suspects = _analyse(images, vectors, source.info.class_names)
    record = source.info.planted_defects
    planted = {(a, b, kind) for a, b, kind, _ in record["duplicates"]}
    found = set(_pairs(duplicates))
    precision, recall = _precision_recall(found, planted)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall, found ^ planted)
    precision, recall = _precision_recall(
        set(suspects["sample_id"].to_pylist()), set(record["mislabelled"])
    )
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_a_file_under_two_classes_and_both_splits_is_cross_class_and_a_leak(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for name in ("cat", "dog"):
            for i in range(count):
                _save(
                    tmp_path / split / name / f"{i}.png",
                    rng.integers(0, 256, (32, 32, 3), np.uint8),
                )
    repeated = rng.integers(0, 256, (32, 32, 3), np.uint8)
    for where in ("train/cat", "train/dog", "test/cat"):
        _save(tmp_path / where / "same.png", repeated)
    source = ImageFolderSource(tmp_path)
    images = pa.concat_tables(source.chunks(64))
    vectors = _extractor(0).embed_encoded([cell["bytes"] for cell in images["image"].to_pylist()])
    duplicates, _ = _analyse(images, vectors, source.info.class_names)
    paths = dict(
        zip(
            images["sample_id"].to_pylist(),
            (c["path"] for c in images["image"].to_pylist()),
            strict=True,
        )
    )
    reported = {(paths[a], paths[b], kind) for a, b, kind in _pairs(duplicates)}
    assert reported == {
        ("train/cat/same.png", "train/dog/same.png", "cross_class"),
        ("train/cat/same.png", "test/cat/same.png", "train_test_leak"),
        ("train/dog/same.png", "test/cat/same.png", "cross_class"),
    }
