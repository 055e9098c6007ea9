"""Neighbours stage: kNN of all embeddings -> neighbours, near_duplicates, label_suspects.

Inside each overlap: a confusion between two classes has three causes (the classes look alike,
the same photo sits in both, or images are mislabelled); this stage finds the last two from the
embeddings, and the overlap and confusion stages count them per pair.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from prefect.logging import get_run_logger

from storage.manifest import StageManifest
from storage.tables import embedding_matrix, stage_shards
from tasks.algorithms import duplicates, label_noise
from tasks.algorithms import neighbours as knn
from tasks.core.params import NeighboursParams
from tasks.core.results import EmbeddingsInfo, ImagesInfo
from tasks.core.stage import Output, Stage

KEY_COLUMNS = ["sample_id", "split", "label", "class_name"]
TOP_CLASSES = 10  # classes with the most suspects, in the manifest


def shard_reader(embeddings: StageManifest) -> knn.ShardReader:
    """The embedding shards as unit float32 matrices, re-readable, refusing NaN or inf."""

    def read() -> Iterator[np.ndarray]:
        for index, shard in enumerate(stage_shards(embeddings, ["embedding"])):
            matrix = embedding_matrix(shard)
            if not np.isfinite(matrix).all():
                raise ValueError(
                    f"embedding shard {index} holds NaN or inf; re-run extraction (with "
                    "--precision fp32 if bf16 overflowed)"
                )
            yield matrix

    return read


def read_keys(embeddings: StageManifest) -> pa.Table:
    """sample_id, split, label and class_name of every embedded image, in shard order."""
    return pa.concat_tables(stage_shards(embeddings, KEY_COLUMNS))


def neighbours_table(found: knn.Neighbours, keys: pa.Table) -> pa.Table:
    """Rows of ``neighbours``: each image's k nearest other images, nearest first."""
    ids = keys.column("sample_id").to_numpy()
    labels = keys.column("label").to_numpy()
    valid = found.positions >= 0
    offsets = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32)
    positions = found.positions[valid]

    def lists(values: np.ndarray, kind: pa.DataType) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, kind))

    return pa.table(
        {
            "sample_id": pa.array(ids[found.queries], pa.int64()),
            "label": pa.array(labels[found.queries], pa.int32()),
            "neighbour_ids": lists(ids[positions], pa.int64()),
            "neighbour_labels": lists(labels[positions], pa.int32()),
            "neighbour_cosines": lists(found.cosine[valid], pa.float32()),
        }
    )


def precision_recall(found: set[Any], planted: set[Any]) -> dict[str, float]:
    """Precision and recall of ``found`` against ``planted`` (1.0 where a set is empty)."""
    hits = len(found & planted)
    return {
        "precision": hits / len(found) if found else 1.0,
        "recall": hits / len(planted) if planted else 1.0,
    }


def planted_check(record: Mapping[str, Any], pairs: pa.Table, suspects: pa.Table) -> dict[str, Any]:
    """Both tables against the synthetic dataset's planted defects."""
    columns = [pairs.column(c).to_pylist() for c in ("sample_id_a", "sample_id_b", "kind")]
    found = set(zip(*columns, strict=True))
    planted = {(a, b, kind) for a, b, kind, _ in record["duplicates"]}
    return {
        "near_duplicates": precision_recall(found, planted),
        "label_suspects": precision_recall(
            set(suspects.column("sample_id").to_pylist()), set(record["mislabelled"])
        ),
    }


def summary(
    keys: pa.Table, pairs: pa.Table, suspects: pa.Table, class_names: Sequence[str]
) -> dict[str, Any]:
    """Dataset-level figures: duplicates by kind, the test split's leak rate, suspects per class."""
    kinds = pairs.column("kind").to_pylist()
    tests = int(np.sum(np.asarray(keys.column("split").to_pylist(), dtype=object) == "test"))
    leaked = len(duplicates.leaked_test_ids(pairs))
    per_class = np.bincount(suspects.column("label").to_numpy(), minlength=len(class_names)).astype(
        int
    )
    top = np.argsort(-per_class, kind="stable")[:TOP_CLASSES]
    return {
        "duplicates": {kind: kinds.count(kind) for kind in duplicates.KINDS},
        "test_images": tests,
        "leaked_test_images": leaked,
        "leak_rate": leaked / tests if tests else None,
        "suspects": suspects.num_rows,
        "suspect_rate": suspects.num_rows / keys.num_rows,
        "suspects_per_class": {class_names[i]: int(per_class[i]) for i in top if per_class[i]},
    }


def _key_params(params: NeighboursParams) -> dict[str, Any]:
    return {
        "k": params.knn_k,
        "duplicate_threshold": params.duplicate_threshold,
        "suspect_alpha": params.suspect_alpha,
    }


STAGE = Stage("neighbours", key_params=_key_params, module=__name__)


@STAGE.task()
def neighbours_task(
    images: StageManifest, embeddings: StageManifest, params: NeighboursParams
) -> Output:
    """Every image's nearest neighbours; near-duplicate pairs and likely label errors."""
    logger = get_run_logger()
    dataset = ImagesInfo.of(images)
    names = dataset.class_names
    keys = read_keys(embeddings)
    dim = EmbeddingsInfo.of(embeddings).dim
    found = knn.knn(shard_reader(embeddings), keys.num_rows, dim, params.knn_k)
    logger.info(
        "neighbours: k=%d over %d images, %s index, recall@k %.4f%s",
        params.knn_k,
        keys.num_rows,
        found.kind,
        found.recall,
        "" if found.kind == "flat" else f" (measured against exact on {knn.RECALL_SAMPLE} rows)",
    )
    threshold = params.duplicate_threshold
    if threshold is None:
        threshold = duplicates.auto_threshold(found.neighbours.cosine[:, 0])
    pairs = duplicates.near_duplicates(found.neighbours, keys, threshold=threshold)
    suspects = label_noise.label_suspects(found.neighbours, keys, names, alpha=params.suspect_alpha)
    info: dict[str, Any] = {
        "k": params.knn_k,
        "index": found.kind,
        "recall_at_k": found.recall,
        "duplicate_threshold": threshold,
        **summary(keys, pairs, suspects, names),
    }
    planted = dataset.planted_defects
    if planted:
        info["planted"] = planted_check(planted, pairs, suspects)
    logger.info(
        "neighbours: %d near-duplicate pairs (cosine >= %.5f) %s; %d of %d test images leaked "
        "from train; %d label suspects",
        pairs.num_rows,
        threshold,
        info["duplicates"],
        info["leaked_test_images"],
        info["test_images"],
        suspects.num_rows,
    )
    return Output(
        tables={
            "neighbours": neighbours_table(found.neighbours, keys),
            "near_duplicates": pairs,
            "label_suspects": suspects,
        },
        info=info,
    )
