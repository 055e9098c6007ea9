"""Small CIFAR datasets written in the real on-disk format (the pickles of the official archive)."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

FINE = ["apple", "bear", "maple_tree", "oak_tree", "girl", "woman"]
COARSE = ["fruit_and_vegetables", "large_carnivores", "trees", "people"]
FINE_TO_COARSE = [0, 1, 2, 2, 3, 3]


def _batch(rng: np.random.Generator, n: int, n_classes: int, coarse: bool) -> dict:
    labels = rng.integers(0, n_classes, size=n).tolist()
    record = {
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i:05d}.png".encode() for i in range(n)],
    }
    if coarse:
        record[b"fine_labels"] = labels
        record[b"coarse_labels"] = [FINE_TO_COARSE[label] for label in labels]
    else:
        record[b"labels"] = labels
    return record


def _dump(path: Path, record: dict) -> None:
    with path.open("wb") as handle:
        pickle.dump(record, handle)


def write_cifar100(root: Path, n_train: int = 60, n_test: int = 24, seed: int = 0) -> Path:
    """A cifar-100-python folder with train, test and meta pickles; returns the folder."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    _dump(folder / "train", _batch(rng, n_train, len(FINE), coarse=True))
    _dump(folder / "test", _batch(rng, n_test, len(FINE), coarse=True))
    meta = {
        b"fine_label_names": [n.encode() for n in FINE],
        b"coarse_label_names": [n.encode() for n in COARSE],
    }
    _dump(folder / "meta", meta)
    return folder


def write_cifar10(root: Path, per_batch: int = 10, seed: int = 0) -> Path:
    """A cifar-10-batches-py folder with five train batches, a test batch and meta."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        _dump(folder / f"data_batch_{i}", _batch(rng, per_batch, 10, coarse=False))
    _dump(folder / "test_batch", _batch(rng, per_batch, 10, coarse=False))
    _dump(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return folder


def cifar100_archive(folder: Path, target: Path) -> Path:
    """The folder packed like the official cifar-100-python.tar.gz."""
    with tarfile.open(target, "w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return target
