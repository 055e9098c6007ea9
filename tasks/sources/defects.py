"""Planted data defects for the synthetic dataset: duplicates, train/test leaks and flipped labels.

Ground truth for the ``near_duplicates`` and ``label_suspects`` tables. Copies are appended
after the original rows (sample_id = row index, so the originals keep theirs); flipped labels
change rows in place. Every defect uses its own source image, so the truth is unambiguous.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

# Copies per duplicate kind, half exact and half near; flipped labels (about 2% of 1,200 rows).
COPIES_PER_KIND = 8
FLIPPED = 24
# A near copy is re-encoded as JPEG (quality 95, no chroma subsampling) and shifted in
# brightness by a few grey levels. No spatial shift: the demo's random-weight ViT is not
# translation-invariant (a 1 px shift leaves cosine 0.2 to the source, against 0.98 to any
# other image of the class), so a shifted copy would not be a near-duplicate in its embedding.
JPEG_QUALITY = 95
BRIGHTNESS_SHIFT = 3


@dataclass(frozen=True)
class Planted:
    """The dataset with its defects, and their record (JSON-able, for the images manifest)."""

    images: np.ndarray  # N x H x W x 3 uint8
    labels: np.ndarray
    splits: np.ndarray
    record: dict[str, Any]

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """(images, labels, splits, record)."""
        return self.images, self.labels, self.splits, self.record


def near_copy(image: np.ndarray, shift: int) -> np.ndarray:
    """``image`` shifted by ``shift`` grey levels and re-encoded as a high-quality JPEG."""
    shifted = np.clip(image.astype(np.int16) + shift, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(shifted).save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def other_label(
    rng: np.random.Generator, label: int, num_classes: int, twins: dict[int, int]
) -> int:
    """A random label other than ``label`` and its planted twin (a flip between twins is
    indistinguishable from their planted overlap, so it would not be a fair test)."""
    banned = {label, twins.get(label, label)}
    choices = [c for c in range(num_classes) if c not in banned]
    return int(rng.choice(choices))


def plant_defects(
    images: np.ndarray,
    labels: np.ndarray,
    splits: np.ndarray,
    *,
    seed: int,
    twin_pairs: list[tuple[int, int]],
    copies_per_kind: int = COPIES_PER_KIND,
    flipped: int = FLIPPED,
) -> Planted:
    """Copies within a class (train), across classes (train, under another label), from train
    into test (same label), half exact and half near, plus ``flipped`` relabelled rows.

    The record lists ``duplicates`` as [source_id, copy_id, kind, "exact"|"near"] with kind as in
    the near_duplicates table, ``flipped`` as [sample_id, original_label, new_label], and
    ``mislabelled``: the sample_ids whose label disagrees with their content (flipped rows and
    cross-class copies), the ground truth of label_suspects.
    """
    rng = np.random.default_rng([seed, 16])
    num_classes = int(labels.max()) + 1
    twins = {a: b for a, b in twin_pairs} | {b: a for a, b in twin_pairs}
    train = np.flatnonzero(splits == "train")
    needed = 3 * copies_per_kind
    if needed + flipped > len(labels) or needed > len(train):
        raise ValueError(f"{len(labels)} rows are too few for {needed} copies and {flipped} flips")
    sources = rng.choice(train, size=needed, replace=False)
    rest = np.setdiff1d(np.arange(len(labels)), sources)
    flip_rows = np.sort(rng.choice(rest, size=flipped, replace=False))
    new_labels = labels.copy()
    flips = []
    for row in flip_rows:
        new_labels[row] = other_label(rng, int(labels[row]), num_classes, twins)
        flips.append([int(row), int(labels[row]), int(new_labels[row])])
    copies, copy_labels, copy_splits, duplicates = [], [], [], []
    kinds = ("same_class", "cross_class", "train_test_leak")
    for number, source in enumerate(sources):
        kind = kinds[number // copies_per_kind]
        exact = number % 2 == 0
        shift = int(rng.choice([-BRIGHTNESS_SHIFT, BRIGHTNESS_SHIFT]))
        copies.append(images[source] if exact else near_copy(images[source], shift))
        label = int(labels[source])
        if kind == "cross_class":
            label = other_label(rng, label, num_classes, twins)
        copy_labels.append(label)
        copy_splits.append("test" if kind == "train_test_leak" else "train")
        duplicates.append([int(source), len(labels) + number, kind, "exact" if exact else "near"])
    mislabelled = sorted(
        [row for row, _, _ in flips]
        + [copy for _, copy, kind, _ in duplicates if kind == "cross_class"]
    )
    return Planted(
        images=np.concatenate([images, np.stack(copies)]),
        labels=np.concatenate([new_labels, np.asarray(copy_labels, dtype=labels.dtype)]),
        splits=np.concatenate([splits, np.asarray(copy_splits, dtype=splits.dtype)]),
        record={"duplicates": duplicates, "flipped": flips, "mislabelled": mislabelled},
    )
