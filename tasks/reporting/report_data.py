"""What the report draws from: the run's tables read through storage, and selections on them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage import registry
from storage.manifest import StageManifest
from storage.tables import read_embeddings, stage_shards
from tasks.algorithms.confusion_pairs import counts_from_table
from tasks.algorithms.overlap_rules import similarity_matrices
from tasks.core.results import ImagesInfo, RunStages, SubsetInfo

MIN_TEST_PER_CLASS = 30  # fewer test points than this per class: project all splits instead


@dataclass(frozen=True)
class Points:
    """The subset's samples: ids, class (new label), split, prediction (-1 off test), embedding."""

    sample_id: np.ndarray
    label: np.ndarray
    split: np.ndarray
    y_pred: np.ndarray
    x: np.ndarray

    def take(self, rows: np.ndarray) -> Points:
        """The given rows only."""
        return Points(
            *(getattr(self, f)[rows] for f in ("sample_id", "label", "split", "y_pred", "x"))
        )

    def __len__(self) -> int:
        return len(self.sample_id)

    @property
    def wrong(self) -> np.ndarray:
        """Test points the classifier got wrong."""
        return (self.y_pred >= 0) & (self.y_pred != self.label)


@dataclass(frozen=True)
class RunTables:
    """Everything the report shows about one run, as arrays and small tables."""

    class_names: list[str]  # subset classes, index = new_label
    original_labels: list[int]  # subset class -> label in the whole dataset
    counts: np.ndarray  # K x K test confusion counts
    all_names: list[str]  # every class of the dataset
    all_cosine: np.ndarray  # N x N centroid cosine, NaN diagonal
    groups: list[int | None]  # overlap group per dataset class
    overlap_pairs: pa.Table
    confusion_pairs: pa.Table
    classification_report: pa.Table
    points: Points

    @property
    def cosine(self) -> np.ndarray:
        """K x K centroid cosine of the subset classes."""
        return self.all_cosine[np.ix_(self.original_labels, self.original_labels)]


def read_points(
    embeddings: StageManifest, subset: StageManifest, evaluation: StageManifest
) -> Points:
    """Embeddings of the subset's samples joined with their split and prediction."""
    splits = registry.table("splits").read(subset.location, ["sample_id", "split", "label"])
    sample_id, x = read_embeddings(embeddings, splits.column("sample_id"))
    split_ids = splits.column("sample_id").to_numpy()
    by_id = np.argsort(split_ids)
    at = by_id[np.searchsorted(split_ids, sample_id, sorter=by_id)]
    labels = splits.column("label").to_numpy()[at]
    split = np.asarray(splits.column("split").to_pylist(), dtype=object)[at]
    predictions = registry.table("predictions").read(evaluation.location, ["sample_id", "y_pred"])
    y_pred = np.full(len(sample_id), -1, np.int64)
    pred_ids = predictions.column("sample_id").to_numpy()
    pos = np.clip(np.searchsorted(sample_id, pred_ids), 0, max(len(sample_id) - 1, 0))
    found = sample_id[pos] == pred_ids
    y_pred[pos[found]] = predictions.column("y_pred").to_numpy()[found]
    return Points(sample_id, labels.astype(np.int64), split, y_pred, x)


def read_run_tables(stages: RunStages) -> RunTables:
    """Read every table the report needs from the stage folders (a run that trained)."""
    subset, similarity, overlap = stages.subset, stages.class_similarity, stages.overlap
    kept = SubsetInfo.of(subset)
    names = kept.class_names
    all_names = ImagesInfo.of(stages.images).class_names
    columns = ["label_a", "label_b", "cosine", "rank"]  # not the N^2 class-name strings
    all_cosine, _ = similarity_matrices(
        registry.table("class_similarity").read(similarity.location, columns), len(all_names)
    )
    classes = registry.table("overlap_classes").read(overlap.location, ["label", "group"])
    groups: list[int | None] = [None] * len(all_names)
    for label, group in zip(
        *(classes.column(c).to_pylist() for c in ("label", "group")), strict=True
    ):
        groups[label] = group
    evaluation = stages.evaluate
    return RunTables(
        class_names=names,
        original_labels=kept.original_labels,
        counts=counts_from_table(
            registry.table("confusion_matrix").read(evaluation.location), len(names)
        ),
        all_names=all_names,
        all_cosine=all_cosine,
        groups=groups,
        overlap_pairs=registry.table("overlap_pairs").read(overlap.location),
        confusion_pairs=registry.table("confusion_pairs").read(stages.confusion.location),
        classification_report=registry.table("classification_report").read(evaluation.location),
        points=read_points(stages.embeddings, subset, evaluation),
    )


def read_table(stage: StageManifest, name: str) -> pa.Table:
    """One single-file table of a stage, by table name."""
    return registry.table(name).read(stage.location)


def read_image_bytes(stage: StageManifest, sample_ids: Sequence[int]) -> dict[int, bytes]:
    """Image bytes of the given samples from the table named as the stage (``images``: streamed
    shard by shard, so memory holds one shard at a time; ``subset``: one file)."""
    spec, columns = registry.table(stage.stage), ["sample_id", "image"]
    parts = stage_shards(stage, columns) if spec.sharded else [spec.read(stage.location, columns)]
    wanted = pa.array(sorted(set(sample_ids)), pa.int64())
    found: dict[int, bytes] = {}
    for part in parts:
        part = part.filter(pc.is_in(part.column("sample_id"), value_set=wanted))
        data = part.column("image").combine_chunks().field("bytes").to_pylist()
        found.update(zip(part.column("sample_id").to_pylist(), data, strict=True))
    return found


def flagged_pairs(pairs: pa.Table) -> pa.Table:
    """The rows of a ``confusion_pairs`` table whose ``flagged`` is true, same columns."""
    return pairs.filter(pc.equal(pairs.column("flagged"), True))


def top_confused_pairs(pairs: pa.Table, n: int) -> list[tuple[int, int]]:
    """Up to ``n`` unordered flagged pairs (by label), highest directed MisRate first."""
    flagged = flagged_pairs(pairs).sort_by([("MisRate", "descending"), ("count", "descending")])
    chosen: list[tuple[int, int]] = []
    for a, b in zip(
        *(flagged.column(c).to_pylist() for c in ("true_label", "pred_label")), strict=True
    ):
        pair = (min(a, b), max(a, b))
        if pair not in chosen:
            chosen.append(pair)
        if len(chosen) == n:
            break
    return chosen


def pairs_to_draw(
    confusion_pairs: pa.Table, overlap_pairs: pa.Table, original_labels: Sequence[int], n: int
) -> tuple[list[tuple[int, int]], str]:
    """The pairs that get a UMAP and an image grid, and a sentence saying which they are.

    The top flagged confusion pairs; when none is flagged, the model-free overlap pairs instead,
    so every run shows the images behind what it found.
    """
    flagged = top_confused_pairs(confusion_pairs, confusion_pairs.num_rows)
    if flagged or n == 0:
        return flagged[:n], (
            f"Flagged confusion pairs drawn: {min(n, len(flagged))} of {len(flagged)}, highest "
            "MisRate first (`--report-pairs` sets how many)."
        )
    new_of = {original: new for new, original in enumerate(original_labels)}
    labels = zip(
        *(overlap_pairs.column(c).to_pylist() for c in ("label_a", "label_b")), strict=True
    )
    model_free = [(new_of[a], new_of[b]) for a, b in labels if a in new_of and b in new_of]
    return model_free[:n], (
        "No confusion pair was flagged; drawn instead: the model-free overlap pairs, most similar "
        f"first ({min(n, len(model_free))} of {len(model_free)}; `--report-pairs` sets how many)."
    )


def pair_points(points: Points, pair: tuple[int, int]) -> Points:
    """The two classes' test points, or every split's when the test split is small."""
    in_pair = np.isin(points.label, pair)
    test = in_pair & (points.split == "test")
    enough = all(np.sum(test & (points.label == c)) >= MIN_TEST_PER_CLASS for c in pair)
    return points.take(np.flatnonzero(test if enough else in_pair))


def grid_samples(
    points: Points, pair: tuple[int, int], names: Sequence[str], per_row: int, seed: int
) -> list[tuple[str, list[int]]]:
    """Rows of a pair's image grid: each class (correct test images first) and each confusion."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, list[int]]] = []
    a, b = pair
    for c in pair:
        members = np.flatnonzero(points.label == c)
        correct = members[(points.y_pred[members] == c)]
        pool = np.concatenate(
            [rng.permutation(correct), rng.permutation(np.setdiff1d(members, correct))]
        )
        rows.append((names[c], points.sample_id[pool[:per_row]].tolist()))
    for true, pred in ((a, b), (b, a)):
        hits = np.flatnonzero((points.label == true) & (points.y_pred == pred))
        caption = f"{names[true]}\npredicted {names[pred]}\n({len(hits)} test images)"
        rows.append((caption, points.sample_id[rng.permutation(hits)[:per_row]].tolist()))
    return rows
