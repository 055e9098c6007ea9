"""Dataset sources: each turns one kind of dataset into rows of the ``images`` table."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from PIL import Image

from storage.layout import duplicate_names
from storage.schemas.images import IMAGES, POINTER


class DatasetError(ValueError):
    """A dataset that cannot be used as given; the message says what to do."""


@dataclass
class DatasetInfo:
    """What is known about a dataset's classes; stored in the images manifest."""

    name: str
    class_names: list[str]
    has_test_split: bool
    coarse_labels: list[int] | None = None
    coarse_names: list[str] | None = None
    planted_pairs: list[list[str]] = field(default_factory=list)
    planted_defects: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # two classes of one name would merge in every table keyed by class_name: refuse now
        if duplicates := duplicate_names(self.class_names):
            raise DatasetError(
                f"dataset {self.name} has duplicate class names: "
                f"{', '.join(map(repr, duplicates))}; rename the classes so each name is unique"
            )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for manifests."""
        return asdict(self)


class Source(Protocol):
    """A dataset that can describe itself and stream its images as table chunks."""

    info: DatasetInfo

    def __len__(self) -> int: ...

    def chunks(self, rows: int) -> Iterator[pa.Table]: ...


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an H x W x 3 (RGB) or H x W (grayscale) uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def images_table(
    sample_ids: np.ndarray,
    splits: list[str],
    labels: np.ndarray,
    info: DatasetInfo,
    image_bytes: list[bytes],
    paths: list[str],
) -> pa.Table:
    """Rows of the images table, with class and superclass names filled in from ``info``."""
    labels = np.asarray(labels, dtype=np.int32)
    names = np.asarray(info.class_names, dtype=object)[labels]
    n = len(labels)
    coarse = pa.nulls(n, pa.int32())
    coarse_names = pa.nulls(n, pa.string())
    if info.coarse_labels is not None and info.coarse_names is not None:
        coarse_np = np.asarray(info.coarse_labels, dtype=np.int32)[labels]
        coarse = pa.array(coarse_np, pa.int32())
        coarse_names = pa.array(np.asarray(info.coarse_names, dtype=object)[coarse_np].tolist())
    return pa.table(
        {
            "sample_id": pa.array(sample_ids, pa.int64()),
            "split": pa.array(splits, pa.string()),
            "label": pa.array(labels, pa.int32()),
            "class_name": pa.array(names.tolist(), pa.string()),
            "coarse_label": coarse,
            "coarse_name": coarse_names,
            "image": pa.StructArray.from_arrays(
                [pa.array(image_bytes, pa.binary()), pa.array(paths, pa.string())],
                fields=list(IMAGES.field("image").type),
            ),
            **{f.name: pa.nulls(n, f.type) for f in POINTER},  # the bytes are copied here
        }
    )


@dataclass
class ArraySource:
    """A dataset held as one uint8 array (CIFAR, MNIST, synthetic), PNG-encoded chunk by chunk."""

    info: DatasetInfo
    images: np.ndarray  # N x H x W x 3 uint8, or N x H x W for grayscale (written as such)
    labels: np.ndarray
    splits: np.ndarray  # N strings
    paths: list[str]
    # each row's sample_id; default the row index (a subset keeps its rows' original ids)
    sample_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def per_class(self, limit: int, seed: int) -> ArraySource:
        """At most ``limit`` rows of each class in each split, drawn at random with ``seed``,
        in the original order and with their original sample ids."""
        rng = np.random.default_rng(seed)
        keep = []
        for split in np.unique(self.splits):
            for label in np.unique(self.labels):
                rows = np.flatnonzero((self.splits == split) & (self.labels == label))
                keep.append(rng.permutation(rows)[:limit] if len(rows) > limit else rows)
        rows = np.sort(np.concatenate(keep))
        ids = np.arange(len(self)) if self.sample_ids is None else self.sample_ids
        return ArraySource(
            info=self.info,
            images=self.images[rows],
            labels=self.labels[rows],
            splits=self.splits[rows],
            paths=[self.paths[i] for i in rows],
            sample_ids=ids[rows],
        )

    def chunks(self, rows: int) -> Iterator[pa.Table]:
        """The images table in chunks of ``rows``; sample_id is the row index unless set."""
        ids = np.arange(len(self)) if self.sample_ids is None else self.sample_ids
        for start in range(0, len(self), rows):
            stop = min(start + rows, len(self))
            yield images_table(
                ids[start:stop],
                self.splits[start:stop].tolist(),
                self.labels[start:stop],
                self.info,
                [encode_png(image) for image in self.images[start:stop]],
                self.paths[start:stop],
            )
