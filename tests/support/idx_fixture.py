"""Small MNIST-style datasets written in the real IDX format (the four files, gzipped or not)."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

UBYTE = 0x08


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: 0, 0, type 0x08, rank, big-endian sizes, the values."""
    header = bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def idx_arrays(n_train: int, n_test: int, n_classes: int = 10, seed: int = 0) -> dict:
    """Random 28 x 28 images and labels (each class in each split) keyed by published file name."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.resize(np.arange(n_classes), n)
        rng.shuffle(labels)
        arrays[f"{prefix}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}-labels-idx1-ubyte"] = labels.astype(np.uint8)
    return arrays


def write_idx_files(folder: Path, arrays: dict, gzipped: bool = True) -> dict[str, str]:
    """Write the files into ``folder``; returns each written file's name -> md5."""
    folder.mkdir(parents=True, exist_ok=True)
    md5 = {}
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gzipped:
            name, data = f"{name}.gz", gzip.compress(data)
        (folder / name).write_bytes(data)
        md5[name] = hashlib.md5(data).hexdigest()
    return md5
