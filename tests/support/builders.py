"""Shared builders of small test inputs (manifests, tables, configs); each owner has a section."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from flows.config import RunConfig
from storage.fs import Location
from storage.manifest import StageManifest
from tasks.core.stage import Stage
from tests.support.paths import TEST_DATA

# --- classifier builders ---


# Real public data: CIFAR-100's test labels and a real model's predictions of them.
REAL = TEST_DATA / "cifar100-test-predictions"


def write_real_predictions(path: Path) -> Path:
    """The real predictions as a Parquet file of y_true and y_pred at ``path``."""
    table = pa.table(
        {
            "y_true": np.load(REAL / "test_labels.npy").astype(np.int64),
            "y_pred": np.load(REAL / "cv_predicted_labels.npy").astype(np.int64),
        }
    )
    pq.write_table(table, path)
    return path


# Five classes: 0-1 very close, 2-3 close, 1-2 a little; the rest far apart.
FIVE_CLASS_COSINE = np.array(
    [
        [1.00, 0.95, 0.20, 0.10, 0.00],
        [0.95, 1.00, 0.50, 0.15, 0.05],
        [0.20, 0.50, 1.00, 0.80, 0.10],
        [0.10, 0.15, 0.80, 1.00, 0.30],
        [0.00, 0.05, 0.10, 0.30, 1.00],
    ]
)


def clf_clusters(
    num_classes: int,
    per_class: int,
    dim: int = 16,
    *,
    seed: int = 0,
    noise: float = 0.05,
    planted: tuple[tuple[int, int], ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised Gaussian clusters, one per class; each planted pair shares one centre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    for a, b in planted:
        centres[b] = centres[a]  # near-identical classes: only the noise tells them apart
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(num_classes), per_class)
    x = centres[labels] + noise * rng.normal(size=(len(labels), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def clf_splits(labels: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Per-sample split names: 60% train, 20% val, 20% test within each class."""
    rng = np.random.default_rng(seed)
    split = np.empty(len(labels), dtype=object)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        cut1, cut2 = int(0.6 * len(rows)), int(0.8 * len(rows))
        split[rows[:cut1]], split[rows[cut1:cut2]], split[rows[cut2:]] = "train", "val", "test"
    return split


def _clf_stage(name: str) -> Stage:
    return Stage(name)


def clf_embeddings_stage(
    root: Path, x: np.ndarray, labels: np.ndarray, class_names: list[str]
) -> StageManifest:
    """An embeddings StageManifest with one shard; sample_id = row index + 1000."""
    from storage.schemas.images import embeddings_schema
    from storage.tables import shard_name, write_parquet

    location = Location(str(root / "embeddings"))
    dim = x.shape[1]
    flat = pa.array(x.reshape(-1), pa.float32())
    table = pa.table(
        {
            "sample_id": np.arange(len(labels), dtype=np.int64) + 1000,
            "split": ["train"] * len(labels),
            "label": labels.astype(np.int32),
            "class_name": [class_names[i] for i in labels],
            "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
        }
    )
    rows = write_parquet(location, shard_name(0), table, embeddings_schema(dim))
    info = {"dim": dim, "class_names": class_names, "coarse_labels": None, "coarse_names": None}
    return _clf_stage("embeddings").finish(location, {shard_name(0): rows}, {}, info)


def clf_subset_stage(
    root: Path,
    labels: np.ndarray,
    split: np.ndarray,
    class_names: list[str],
    coarse_names: list[str | None] | None = None,
) -> StageManifest:
    """A subset StageManifest whose splits.parquet covers every embedding row (same labels)."""
    from storage.schemas.subset import SPLITS
    from storage.tables import table_name, write_parquet

    location = Location(str(root / "subset"))
    table = pa.table(
        {
            "sample_id": np.arange(len(labels), dtype=np.int64) + 1000,
            "split": list(split),
            "label": labels.astype(np.int32),
            "class_name": [class_names[i] for i in labels],
            "original_label": labels.astype(np.int32),
        }
    )
    rows = write_parquet(location, table_name("splits"), table, SPLITS)
    info = {
        "class_names": class_names,
        "original_labels": list(range(len(class_names))),
        "coarse_names": coarse_names,
    }
    return _clf_stage("subset").finish(location, {table_name("splits"): rows}, {}, info)


def clf_similarity_stage(root: Path, cosine: np.ndarray, class_names: list[str]) -> StageManifest:
    """A similarity StageManifest with class_similarity.parquet (both directions)."""
    from storage.schemas.class_similarity import CLASS_SIMILARITY
    from storage.tables import table_name, write_parquet

    location = Location(str(root / "similarity"))
    a, b = np.nonzero(~np.eye(len(class_names), dtype=bool))
    table = pa.table(
        {
            "label_a": a.astype(np.int32),
            "class_a": [class_names[i] for i in a],
            "label_b": b.astype(np.int32),
            "class_b": [class_names[i] for i in b],
            "cosine": cosine[a, b].astype(np.float32),
            "rank": np.ones(len(a), dtype=np.int32),
        }
    )
    rows = write_parquet(location, table_name("class_similarity"), table, CLASS_SIMILARITY)
    return _clf_stage("class_similarity").finish(
        location, {table_name("class_similarity"): rows}, {}, {}
    )


def clf_config(root: Path, **overrides: object) -> RunConfig:
    """A RunConfig writing under ``root/out``, small and fast training by default."""
    settings = {
        "dataset": "synthetic",
        "out": str(root / "out"),
        "hidden_size": 32,
        "epochs": 60,
        "patience": 8,
        "train_batch_size": 32,
    }
    return RunConfig(**{**settings, **overrides})


@contextlib.contextmanager
def clf_single_thread() -> Iterator[None]:
    """Tiny MLPs train ~10x faster on one thread than on a shared, busy CPU's two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --- overlap builders ---


def ovl_clusters(
    num_classes: int,
    per_class: int,
    dim: int = 8,
    *,
    seed: int = 0,
    noise: float = 0.3,
    twins: tuple[tuple[int, int], ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings around random class centres; each twin pair's centres nearly coincide."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    for a, b in twins:
        centres[b] = centres[a] + 0.05 * rng.normal(size=dim)
    labels = np.repeat(np.arange(num_classes), per_class)
    x = centres[labels] / np.linalg.norm(centres[labels], axis=1, keepdims=True)
    x = x + noise * rng.normal(size=x.shape) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def ovl_embeddings_table(
    x: np.ndarray, labels: np.ndarray, class_names: list[str], splits: list[str] | None = None
) -> pa.Table:
    """Rows of the embeddings table; sample_id = row index."""
    flat = pa.array(np.ascontiguousarray(x, dtype=np.float32).reshape(-1), pa.float32())
    return pa.table(
        {
            "sample_id": np.arange(len(labels), dtype=np.int64),
            "split": splits or ["train"] * len(labels),
            "label": np.asarray(labels, dtype=np.int32),
            "class_name": [class_names[i] for i in labels],
            "embedding": pa.FixedSizeListArray.from_arrays(flat, x.shape[1]),
        }
    )


def ovl_write_shards(location: Location, table: pa.Table, rows_per_shard: int) -> dict[str, int]:
    """Write ``table`` as shards part-00000.parquet, ...; return rows per shard name."""
    from storage.schemas.images import embeddings_schema
    from storage.tables import shard_name, write_parquet

    dim = table.schema.field("embedding").type.list_size
    rows = {}
    for index, start in enumerate(range(0, table.num_rows, rows_per_shard)):
        part = table.slice(start, rows_per_shard)
        rows[shard_name(index)] = write_parquet(
            location, shard_name(index), part, embeddings_schema(dim)
        )
    return rows


def ovl_embeddings_stage(
    root: Path,
    table: pa.Table,
    class_names: list[str],
    *,
    rows_per_shard: int = 50,
    **info: object,
) -> StageManifest:
    """An embeddings StageManifest over shards of ``table``; extra ``info`` keys are added."""
    location = Location(str(root / "embeddings"))
    rows = ovl_write_shards(location, table, rows_per_shard)
    base = {
        "dim": table.schema.field("embedding").type.list_size,
        "class_names": class_names,
        "coarse_labels": None,
        "coarse_names": None,
        "has_test_split": False,
    }
    return Stage("embeddings").finish(location, rows, {}, {**base, **info})


def ovl_images_stage(
    root: Path,
    labels: np.ndarray,
    splits: list[str],
    class_names: list[str],
    *,
    rows_per_shard: int = 40,
    coarse_labels: list[int] | None = None,
    coarse_names: list[str] | None = None,
) -> StageManifest:
    """An images StageManifest of tiny PNGs (pixel value = sample_id % 256); sample_id = row."""
    import io

    from PIL import Image

    from storage.schemas.images import IMAGES, POINTER
    from storage.tables import shard_name, write_parquet

    location = Location(str(root / "images"))
    n = len(labels)
    pngs = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.fromarray(np.full((4, 4, 3), i % 256, dtype=np.uint8)).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    coarse = None if coarse_labels is None else [coarse_labels[i] for i in labels]
    table = pa.table(
        {
            "sample_id": np.arange(n, dtype=np.int64),
            "split": splits,
            "label": np.asarray(labels, dtype=np.int32),
            "class_name": [class_names[i] for i in labels],
            "coarse_label": pa.array(coarse, pa.int32()) if coarse else pa.nulls(n, pa.int32()),
            "coarse_name": [coarse_names[c] for c in coarse]
            if coarse and coarse_names
            else pa.nulls(n, pa.string()),
            "image": pa.StructArray.from_arrays(
                [pa.array(pngs, pa.binary()), pa.array([f"{i}.png" for i in range(n)])],
                fields=list(IMAGES.field("image").type),
            ),
            **{f.name: pa.nulls(n, f.type) for f in POINTER},  # bytes copied, not pointed to
        }
    )
    rows = {}
    for index, start in enumerate(range(0, n, rows_per_shard)):
        part = table.slice(start, rows_per_shard)
        rows[shard_name(index)] = write_parquet(location, shard_name(index), part, IMAGES)
    info = {
        "class_names": class_names,
        "coarse_labels": coarse_labels,
        "coarse_names": coarse_names,
        "has_test_split": "test" in splits,
    }
    return Stage("images").finish(location, rows, {}, info)


def ovl_overlap_stage(root: Path, flagged: list[int], class_names: list[str]) -> StageManifest:
    """An overlap StageManifest whose overlap_classes table lists ``flagged`` labels."""
    from storage.schemas.overlap import OVERLAP_CLASSES
    from storage.tables import table_name, write_parquet

    location = Location(str(root / "overlap"))
    n = len(flagged)
    table = pa.table(
        {
            "label": pa.array(flagged, pa.int32()),
            "class_name": [class_names[i] for i in flagged],
            "partners": pa.array([[] for _ in flagged], pa.list_(pa.string())),
            "partner_labels": pa.array([[] for _ in flagged], pa.list_(pa.int32())),
            "group": pa.array([0] * n, pa.int32()),
            "group_size": pa.array([n] * n, pa.int32()),
            "max_cosine": pa.array([0.9] * n, pa.float32()),
        }
    )
    rows = write_parquet(location, table_name("overlap_classes"), table, OVERLAP_CLASSES)
    stage = Stage("overlap")
    return stage.finish(location, {table_name("overlap_classes"): rows}, {"rule": "sigma"}, {})


def ovl_config(root: Path, **overrides: object) -> RunConfig:
    """A RunConfig writing under ``root/out``."""
    return RunConfig(**{"dataset": "synthetic", "out": str(root / "out"), **overrides})


# --- shared: the dataset facts that stages read from the images manifest ---


def dataset_stage(root: Path, class_names: list[str], **info: object) -> StageManifest:
    """An images StageManifest with no files, only the dataset facts (class names and ``info``)."""
    location = Location(str(root / "images-info"))
    facts = {"class_names": class_names, "coarse_labels": None, "coarse_names": None, **info}
    return Stage("images").finish(location, {}, {}, facts)
