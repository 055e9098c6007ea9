"""What the explorer page shows: gathered from a run's tables into arrays and small tables."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from storage import registry
from tasks.core.results import RunStages
from tasks.reporting import figures_pairs, report_data
from tasks.reporting.report_data import Points, RunTables

# --explorer-images: a 5,400-image CIFAR-sized subset fits whole (about 3 KB an image)
DEFAULT_MAX_IMAGES = 6000
THUMB_PX = 64  # longest side of an embedded image; CIFAR's 32 px images stay at source size
PAIR_IMAGES = 24  # pair_samples images per class of a pair that the page embeds
CELL_IMAGES = 48  # misclassified test images per confusion cell that the page embeds
MAX_SIMILARITY_CLASSES = 100  # above this the similarity heatmap shows the overlapping ones only


class ExplorerError(ValueError):
    """Explorer input the page cannot be built from; the message says what to do."""


@dataclass(frozen=True)
class Scatter:
    """One UMAP view. ``table`` rows: one per point; columns sample_id, x, y, label, class_name,
    split, prediction (predicted class name, "" off the test split), wrong (bool)."""

    title: str
    table: pa.Table


@dataclass(frozen=True)
class ExplorerData:
    """Everything the page shows; every image is referenced by sample_id into ``thumbs``."""

    title: str
    class_names: list[str]  # confusion-matrix classes, index = label
    counts: np.ndarray  # K x K test confusion counts
    confusion_pairs: pa.Table  # directed pairs, labels index class_names
    cells: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (true, pred) -> ids
    similarity_names: list[str] = field(default_factory=list)
    similarity: np.ndarray | None = None  # M x M centroid cosine of similarity_names
    overlap_pairs: pa.Table | None = None  # model-free flagged pairs (class_a, class_b, ...)
    pair_samples: pa.Table | None = None  # class_a, class_b, sample_id, class_name, margin, rank
    scatters: list[Scatter] = field(default_factory=list)
    captions: dict[int, str] = field(default_factory=dict)  # sample_id -> "class, split, pred"
    thumbs: dict[int, str] = field(default_factory=dict)  # sample_id -> data: URI
    notes: list[str] = field(default_factory=list)


def thumbnail_uri(data: bytes, max_px: int = THUMB_PX) -> str:
    """A data: URI of an image: PNG bytes as they are when small, else downscaled to ``max_px``."""
    with Image.open(io.BytesIO(data)) as image:
        if max(image.size) <= max_px and image.format == "PNG":
            return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        image = image.convert("RGB")
        image.thumbnail((max_px, max_px))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)  # photos: JPEG is a third of PNG's size
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def confusion_cells(points: Points, per_cell: int) -> dict[tuple[int, int], list[int]]:
    """Up to ``per_cell`` sample ids of the misclassified test points per (true, pred) cell."""
    wrong = np.flatnonzero(points.wrong)
    cells: dict[tuple[int, int], list[int]] = {}
    for i in wrong:
        key = (int(points.label[i]), int(points.y_pred[i]))
        ids = cells.setdefault(key, [])
        if len(ids) < per_cell:
            ids.append(int(points.sample_id[i]))
    return cells


def pair_sample_rows(pair_samples: pa.Table, per_side: int) -> pa.Table:
    """pair_samples rows with rank <= ``per_side`` (closest to the other class first)."""
    return pair_samples.filter(pc.less_equal(pair_samples.column("rank"), per_side))


def choose_images(
    required: Sequence[int], points: Points, max_images: int, seed: int
) -> tuple[list[int], np.ndarray]:
    """(embedded sample ids, rows of ``points`` in the UMAP) within ``max_images`` images.

    The images that clicks show come first; the UMAP gets a class-stratified sample of what is
    left of the budget, so every point on it has its thumbnail.
    """
    if max_images < 1:
        raise ExplorerError(f"max_images must be at least 1 (got {max_images})")
    chosen = list(dict.fromkeys(int(i) for i in required))[:max_images]
    budget = max(max_images - len(chosen), 0)
    rows = figures_pairs.stratified_sample(points.label, budget, seed) if budget else np.array([])
    rows = np.asarray(rows, np.int64)
    taken = set(chosen)
    chosen += [int(i) for i in points.sample_id[rows] if int(i) not in taken]
    return chosen[:max_images], rows


def scatter_table(points: Points, coords: np.ndarray, names: Sequence[str]) -> pa.Table:
    """Rows of a Scatter table (see Scatter) from points and their 2-D coordinates."""
    name_array = np.asarray(names, dtype=object)
    tested = points.y_pred >= 0
    prediction = np.where(tested, name_array[np.clip(points.y_pred, 0, None)], "")
    return pa.table(
        {
            "sample_id": pa.array(points.sample_id, pa.int64()),
            "x": pa.array(coords[:, 0], pa.float64()),
            "y": pa.array(coords[:, 1], pa.float64()),
            "label": pa.array(points.label, pa.int64()),
            "class_name": pa.array(name_array[points.label].tolist(), pa.string()),
            "split": pa.array(list(points.split), pa.string()),
            "prediction": pa.array(prediction.tolist(), pa.string()),
            "wrong": pa.array(points.wrong, pa.bool_()),
        }
    )


def captions(points: Points, names: Sequence[str]) -> dict[int, str]:
    """sample_id -> "class · split · predicted name" for the gallery's image titles (``points``:
    those the page shows an image of)."""
    out = {}
    for sid, label, split, pred in zip(
        points.sample_id, points.label, points.split, points.y_pred, strict=True
    ):
        predicted = f" · predicted {names[pred]}" if pred >= 0 else ""
        out[int(sid)] = f"{names[label]} · {split}{predicted} · id {sid}"
    return out


def scatters(
    points: Points, names: Sequence[str], pairs: Sequence[tuple[int, int]], seed: int
) -> list[Scatter]:
    """A UMAP of the given points, then one per pair (its two classes' points among them)."""
    views = [("All overlapping classes", points)]
    for a, b in pairs:
        views.append(
            (
                f"{names[a]} vs {names[b]}",
                points.take(np.flatnonzero(np.isin(points.label, (a, b)))),
            )
        )
    out = []
    for title, shown in views:
        if len(shown) == 0:
            continue
        coords = figures_pairs.umap_2d(shown.x, seed=seed)
        out.append(Scatter(f"{title} (n = {len(shown)})", scatter_table(shown, coords, names)))
    return out


def shown_similarity(data: RunTables) -> tuple[list[str], np.ndarray]:
    """Names and cosine matrix of every class, or the overlapping ones when there are many."""
    n = len(data.all_names)
    shown = list(range(n)) if n <= MAX_SIMILARITY_CLASSES else list(data.original_labels)
    return [data.all_names[i] for i in shown], data.all_cosine[np.ix_(shown, shown)]


def gather_run(
    stages: RunStages,
    data: RunTables,
    *,
    title: str,
    max_images: int = DEFAULT_MAX_IMAGES,
    report_pairs: int = 5,
    seed: int = 0,
) -> ExplorerData:
    """The explorer's data of a whole run: its tables, UMAPs and up to ``max_images`` images."""
    if max_images < 1:
        raise ExplorerError(f"max_images must be at least 1 (got {max_images})")
    points = data.points
    samples = None  # an overlap stage written before pair_samples existed has none
    if registry.table("pair_samples").file_name in stages.overlap.files:
        table = report_data.read_table(stages.overlap, "pair_samples")
        samples = pair_sample_rows(table, PAIR_IMAGES)
    cells = confusion_cells(points, CELL_IMAGES)
    required = [] if samples is None else samples.column("sample_id").to_pylist()
    required += [i for ids in cells.values() for i in ids]
    chosen, rows = choose_images(required, points, max_images, seed)
    pairs, _ = report_data.pairs_to_draw(
        data.confusion_pairs, data.overlap_pairs, data.original_labels, report_pairs
    )
    images = report_data.read_image_bytes(stages.subset, chosen)
    thumbs = {sid: thumbnail_uri(images[sid]) for sid in chosen if sid in images}
    names, cosine = shown_similarity(data)
    notes = [f"{len(thumbs)} images embedded (at most {max_images}: `--explorer-images`)."]
    if (left_out := len(set(required)) - max_images) > 0:
        notes.append(f"{left_out} pair or confusion images left out by the cap.")
    return ExplorerData(
        title=title,
        class_names=list(data.class_names),
        counts=data.counts,
        confusion_pairs=data.confusion_pairs,
        cells=cells,
        similarity_names=names,
        similarity=cosine,
        overlap_pairs=data.overlap_pairs,
        pair_samples=samples,
        scatters=scatters(points.take(rows), data.class_names, pairs, seed),
        captions=captions(
            points.take(np.flatnonzero(np.isin(points.sample_id, list(thumbs)))), data.class_names
        ),
        thumbs=thumbs,
        notes=notes,
    )


def gather_predictions(
    title: str, counts: np.ndarray, names: Sequence[str], confusion_pairs: pa.Table
) -> ExplorerData:
    """The explorer's data of analyze-predictions: confusion matrix and pairs, no images."""
    return ExplorerData(
        title=title,
        class_names=list(names),
        counts=counts,
        confusion_pairs=confusion_pairs,
        notes=["Predictions only: no images or embeddings, so no galleries and no UMAP."],
    )
