"""A folder of class sub-folders (optionally under train/ and test/), streamed file by file."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from storage.escape import terminal
from tasks.sources import DatasetError, DatasetInfo, images_table
from tasks.sources.decode import DEFAULT_MAX_PIXELS, UnsupportedImageError, normalised_bytes

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class ImageFile:
    """One image file and where it belongs."""

    path: Path
    split: str
    label: int


def _split_roots(root: Path) -> list[tuple[str, Path]]:
    """(split, folder) pairs: train/ and test/ when present, else the whole folder as train."""
    if (root / "train").is_dir():
        roots = [("train", root / "train")]
        if (root / "test").is_dir():
            roots.append(("test", root / "test"))
        return roots
    return [("train", root)]


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def hidden_folders(root: Path) -> list[str]:
    """Folders where classes are looked for whose names start with "." (``.cache``, ``.git``):
    never classes, so skipped, and reported; paths relative to ``root``, sorted."""
    return sorted(
        str(d.relative_to(root))
        for _, folder in _split_roots(root)
        for d in folder.iterdir()
        if d.is_dir() and d.name.startswith(".")
    )


def _class_files(class_dir: Path) -> list[Path]:
    """Image files under a class folder, sorted; OSError for a link that loops or leads nowhere.

    Such a link would otherwise fail later, in the load stage's listing, with a traceback.
    """
    files = []
    for path in sorted(class_dir.rglob("*")):
        if path.is_symlink():
            os.stat(path)  # ELOOP for a loop, ENOENT for a dangling link; carries the filename
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            files.append(path)
    return files


def scan_imagefolder(root: Path) -> tuple[list[str], list[ImageFile], bool]:
    """Class names, image files in a stable order, and whether a test split exists.

    Checks what can be checked cheaply before any image is decoded.
    """
    root = Path(root)
    if root.is_file():
        raise DatasetError(f"image folder {root} is a file; pass imagefolder:PATH of a folder")
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist; pass imagefolder:PATH of a folder")
    try:
        return _scan(root)
    except OSError as error:  # a symlink loop, an unreadable sub-folder: name it, no traceback
        where = error.filename or root
        raise DatasetError(
            f"image folder {root}: cannot read {where} ({error.strerror or error}); "
            "remove or fix that entry"
        ) from None


def _scan(root: Path) -> tuple[list[str], list[ImageFile], bool]:
    """scan_imagefolder's work on a folder known to exist."""
    roots = _split_roots(root)
    class_names = sorted({d.name for _, folder in roots for d in _class_dirs(folder)})
    if len(class_names) < 2:
        raise DatasetError(
            f"image folder {root} has {len(class_names)} class sub-folder(s); overlap needs at "
            "least 2 (layout: PATH/<class>/<image> or PATH/train/<class>/<image>)"
        )
    label_of = {name: i for i, name in enumerate(class_names)}
    files = [
        ImageFile(path, split, label_of[class_dir.name])
        for split, folder in roots
        for class_dir in _class_dirs(folder)
        for path in _class_files(class_dir)
    ]
    if not files:
        raise DatasetError(f"image folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return class_names, files, len(roots) == 2


def read_image_file(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bytes | None:
    """The file's bytes (an odd image: PNG of its 8-bit RGB picture, see ``decode``), or None
    for a file that does not decode or has more than ``max_pixels`` pixels."""
    try:
        return normalised_bytes(path.read_bytes(), max_pixels)
    except (UnsupportedImageError, OSError) as error:
        log.warning("cannot decode %s: %s", terminal(path), terminal(error))
        return None


@dataclass
class ImageFolderSource:
    """Streams an image folder into images-table chunks, skipping unreadable files (warned)."""

    root: Path
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    info: DatasetInfo = field(init=False)
    files: list[ImageFile] = field(init=False)
    skipped: list[str] = field(default_factory=list, init=False)
    hidden: list[str] = field(default_factory=list, init=False)  # hidden folders skipped

    def __post_init__(self) -> None:
        class_names, self.files, has_test = scan_imagefolder(self.root)
        self.hidden = hidden_folders(self.root)
        self.info = DatasetInfo(
            name=f"imagefolder:{self.root}", class_names=class_names, has_test_split=has_test
        )

    def __len__(self) -> int:
        return len(self.files)

    def chunks(self, rows: int) -> Iterator[pa.Table]:
        """Original file bytes (no re-encoding); sample_id is the file's index in the scan order."""
        samples = (
            (sample_id, item, data)
            for sample_id, item in enumerate(self.files)
            if (data := self._read(item)) is not None
        )
        return self._batched(samples, rows)

    def _read(self, item: ImageFile) -> bytes | None:
        """The file's bytes, or None for an unreadable one (warned and listed in ``skipped``)."""
        data = read_image_file(item.path, max_pixels=self.max_pixels)
        if data is None:
            self.skipped.append(str(item.path))
            log.warning("skipping unreadable image %s", terminal(item.path))
        return data

    def _batched(
        self, samples: Iterator[tuple[int, ImageFile, bytes]], rows: int
    ) -> Iterator[pa.Table]:
        """Images-table chunks of ``rows`` samples (the last one shorter)."""
        batch: list[tuple[int, ImageFile, bytes]] = []
        for sample in samples:
            batch.append(sample)
            if len(batch) == rows:
                yield self._table(batch)
                batch = []
        if batch:
            yield self._table(batch)

    def _table(self, batch: list[tuple[int, ImageFile, bytes]]) -> pa.Table:
        return images_table(
            np.array([sid for sid, _, _ in batch]),
            [item.split for _, item, _ in batch],
            np.array([item.label for _, item, _ in batch]),
            self.info,
            [data for _, _, data in batch],
            [str(item.path.relative_to(self.root)) for _, item, _ in batch],
        )
