"""A deterministic, CIFAR-shaped synthetic dataset with planted pairs of look-alike classes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tasks.sources import ArraySource, DatasetInfo, defects

if TYPE_CHECKING:
    from tasks.core.params import ImagesParams

N_CLASSES = 12
N_PLANTED_PAIRS = 3
TRAIN_PER_CLASS = 80
TEST_PER_CLASS = 20
SIZE = 32
# How much of a planted partner's prototype is its twin's: high enough that any embedding that
# preserves image similarity puts the two centroids far closer than any other pair.
TWIN_SHARE = 0.97
NOISE = 0.15


def _prototypes(rng: np.random.Generator, n: int) -> np.ndarray:
    """One random +-1 8x8 colour tile per class, tiled 4x4 (n x 3 x 32 x 32 in [0.2, 0.8]).

    Sharp, high-contrast tiles keep classes far apart even under a random-weight ViT (smooth
    colour fields all look alike to one), and at the demo's 64 px input every 16 px patch sees
    the whole tile, so the planted twins stand out as the only close pairs.
    """
    tile = rng.choice([-1.0, 1.0], size=(n, 3, 8, 8)).astype(np.float32)
    return 0.5 + 0.3 * np.tile(tile, (1, 1, 4, 4))


def planted_pairs(seed: int) -> list[tuple[int, int]]:
    """The label pairs made hard to tell apart for this seed."""
    order = np.random.default_rng(seed).permutation(N_CLASSES)
    return [
        (int(min(a, b)), int(max(a, b))) for a, b in order[: 2 * N_PLANTED_PAIRS].reshape(-1, 2)
    ]


def make_synthetic(seed: int = 0, *, with_defects: bool = False) -> ArraySource:
    """Train and test images of N_CLASSES classes; ``info.planted_pairs`` holds the ground truth.

    ``with_defects`` adds duplicates, train/test leaks and flipped labels (``defects``), recorded
    in ``info.planted_defects``.
    """
    rng = np.random.default_rng(seed + 1)
    protos = _prototypes(rng, N_CLASSES)
    for a, b in planted_pairs(seed):
        protos[b] = TWIN_SHARE * protos[a] + (1 - TWIN_SHARE) * protos[b]
    splits, labels = [], []
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        labels.append(np.repeat(np.arange(N_CLASSES, dtype=np.int32), per_class))
        splits += [split] * (N_CLASSES * per_class)
    label_array = np.concatenate(labels)
    noise = rng.normal(0, NOISE, size=(len(label_array), 3, SIZE, SIZE)).astype(np.float32)
    brightness = rng.uniform(0.9, 1.1, size=(len(label_array), 1, 1, 1)).astype(np.float32)
    pixels = np.clip(protos[label_array] * brightness + noise, 0, 1)
    images = (pixels * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    splits, record = np.array(splits), {}
    if with_defects:
        planted = defects.plant_defects(
            images, label_array, splits, seed=seed, twin_pairs=planted_pairs(seed)
        )
        images, label_array, splits, record = planted.as_tuple()
    names = [f"class_{i:02d}" for i in range(N_CLASSES)]
    info = DatasetInfo(
        name="synthetic",
        class_names=names,
        has_test_split=True,
        planted_pairs=[[names[a], names[b]] for a, b in planted_pairs(seed)],
        planted_defects=record,
    )
    paths = [f"synthetic_{i:05d}.png" for i in range(len(label_array))]
    return ArraySource(info=info, images=images, labels=label_array, splits=splits, paths=paths)


def open_dataset(params: ImagesParams, name: str) -> ArraySource:
    """The dataset the images parameters' seed and ``--synthetic-defects`` make."""
    return make_synthetic(params.seed, with_defects=params.synthetic_defects)
