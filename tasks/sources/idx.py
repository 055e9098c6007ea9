"""MNIST and Fashion-MNIST: the four standard IDX files, gzipped or not, from a local folder.

Found in ``--data-dir`` itself (a flat folder such as Debian's
/usr/share/datasets/fashion-mnist/), in torchvision's ``FashionMNIST/raw/`` or ``MNIST/raw/``
layout, or in a sub-folder named after the dataset. When none holds all four files they are
downloaded from the mirrors torchvision lists (or ``--download-url``), each md5-checked, into
``DATA_DIR/<torchvision folder>/raw/``. Train and test are the published splits.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tasks.sources import ArraySource, DatasetError, DatasetInfo
from tasks.sources.download import (
    ChecksumError,
    DownloadError,
    UnusableURLError,
    download_folder,
    failure_reason,
    fetch,
)

if TYPE_CHECKING:
    from tasks.core.params import ImagesParams

log = logging.getLogger(__name__)

# The IDX header: two zero bytes, a type code, the number of dimensions; then one big-endian
# uint32 per dimension (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"
# (split, images file, labels file) as published, without the .gz
SPLIT_FILES = (
    ("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)


@dataclass(frozen=True)
class IdxDataset:
    """One IDX dataset: its class names, torchvision's folder, mirrors and the .gz files' md5."""

    name: str
    class_names: tuple[str, ...]
    folder: str  # torchvision's: DATA_DIR/<folder>/raw/
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # "<file>.gz" -> md5 of the published gzip file


# Names and checksums as torchvision 0.2x lists them (datasets.MNIST / FashionMNIST); the class
# names are written so that each is one token in file names and tables ("T-shirt/top" ->
# "t-shirt_top").
VARIANTS: dict[str, IdxDataset] = {
    "fashion-mnist": IdxDataset(
        name="fashion-mnist",
        class_names=(
            "t-shirt_top",
            "trouser",
            "pullover",
            "dress",
            "coat",
            "sandal",
            "shirt",
            "sneaker",
            "bag",
            "ankle_boot",
        ),
        folder="FashionMNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "mnist": IdxDataset(
        name="mnist",
        class_names=tuple(
            f"{digit} - {word}"
            for digit, word in enumerate(
                ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
            )
        ),
        folder="MNIST",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
}

FILE_NAMES = tuple(name for _split, *files in SPLIT_FILES for name in files)


def read_idx(path: Path) -> np.ndarray:
    """The uint8 array of one IDX file (gzipped or not); DatasetError when it is not one."""
    with path.open("rb") as handle:
        gzipped = handle.read(2) == GZIP_MAGIC
    opener = gzip.open if gzipped else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:  # a truncated or damaged gzip stream
        raise DatasetError(f"{path} does not unpack ({error}); replace the file") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != UBYTE:
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes; replace the file")
    dims = data[3]
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", count=dims, offset=4))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DatasetError(
            f"{path} holds {body.size} values where its header announces {shape}; "
            "the file is truncated: replace it"
        )
    return body.reshape(shape)


def _file_in(folder: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` in ``folder``, whichever exists (the unpacked file first)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def candidate_folders(root: Path, spec: IdxDataset) -> list[Path]:
    """Where the files may be, in the order searched: flat, torchvision's layout, by name."""
    return [root, root / spec.folder / "raw", root / spec.name, root / spec.name / "raw"]


def find_files(root: Path, spec: IdxDataset) -> dict[str, Path] | None:
    """The four files in the first candidate folder that holds all of them, else None."""
    for folder in candidate_folders(root, spec):
        found = {name: _file_in(folder, name) for name in FILE_NAMES}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def download_idx(
    root: Path,
    spec: IdxDataset,
    url: str | None = None,
    timeout: float | None = None,
    md5: dict[str, str] | None = None,
) -> Path:
    """Download the four .gz files into ``root/<folder>/raw`` unless there; md5-checked.

    ``url``: a mirror's base URL (the files are fetched as URL + file name); default: each of
    torchvision's mirrors in turn. The files are moved into place only when all four pass.
    """
    target = Path(root) / spec.folder / "raw"
    checksums = md5 or spec.md5
    mirrors = (url.rstrip("/") + "/",) if url else spec.mirrors
    hint = (
        f"use --download-url MIRROR, or put the four IDX files ({', '.join(FILE_NAMES)}, "
        f"gzipped or not) in --data-dir"
        + (
            " (Debian: apt install dataset-fashion-mnist, then --data-dir "
            "/usr/share/datasets/fashion-mnist)"
            if spec.name == "fashion-mnist"
            else ""
        )
    )
    with download_folder(Path(root)) as tmp:
        for file_name, expected in checksums.items():
            _fetch_checked(mirrors, file_name, expected, tmp / file_name, spec.name, hint, timeout)
        target.mkdir(parents=True, exist_ok=True)
        for file_name in checksums:
            shutil.move(str(tmp / file_name), target / file_name)
    return target


def _fetch_checked(
    mirrors: tuple[str, ...],
    file_name: str,
    expected: str,
    path: Path,
    name: str,
    hint: str,
    timeout: float | None,
) -> None:
    """Fetch ``file_name`` from the first mirror that serves it with the expected md5."""
    failures = []
    for mirror in mirrors:
        source = mirror + file_name
        log.info("downloading %s from %s", file_name, source)
        try:
            fetch(source, path, timeout)
        except UnusableURLError as error:
            raise UnusableURLError(f"could not download {name} from {error}; {hint}") from None
        except OSError as error:
            failures.append((source, error))
            continue
        if hashlib.md5(path.read_bytes()).hexdigest() == expected:
            return
        raise ChecksumError(
            f"{source} sent a file that fails the {name} md5 checksum "
            f"(the mirror serves another file?); {hint}"
        )
    source, error = failures[-1]
    raise DownloadError(
        f"could not download {name} from {source} ({failure_reason(error)}); "
        f"check the network, {hint}"
    ) from error


def read_idx_dataset(files: dict[str, Path], spec: IdxDataset) -> ArraySource:
    """Train rows first, then test, in the published order; grayscale images (N x 28 x 28)."""
    images, labels, splits, paths = [], [], [], []
    for split, images_file, labels_file in SPLIT_FILES:
        pixels = read_idx(files[images_file])
        targets = read_idx(files[labels_file]).astype(np.int32)
        if pixels.ndim != 3 or targets.ndim != 1 or len(pixels) != len(targets):
            raise DatasetError(
                f"{files[images_file]} ({pixels.shape}) and {files[labels_file]} "
                f"({targets.shape}) do not pair up as N images and N labels; replace them"
            )
        if targets.size and targets.max() >= len(spec.class_names):
            raise DatasetError(
                f"{files[labels_file]} holds label {targets.max()}, but {spec.name} has "
                f"{len(spec.class_names)} classes; is it another dataset's file?"
            )
        images.append(pixels)
        labels.append(targets)
        splits += [split] * len(targets)
        paths += [f"{split}/{i:05d}" for i in range(len(targets))]
    info = DatasetInfo(name=spec.name, class_names=list(spec.class_names), has_test_split=True)
    return ArraySource(
        info=info,
        images=np.concatenate(images),
        labels=np.concatenate(labels),
        splits=np.asarray(splits),
        paths=paths,
    )


def load_idx(root: Path, name: str, url: str | None = None) -> ArraySource:
    """Read the files from ``root`` (downloading them when absent), then parse."""
    spec = VARIANTS[name]
    files = find_files(Path(root), spec)
    if files is None:
        files = find_files(download_idx(Path(root), spec, url), spec)
    assert files is not None  # download_idx wrote all four
    return read_idx_dataset(files, spec)


def open_dataset(params: ImagesParams, name: str) -> ArraySource:
    """Dataset ``name`` of the images parameters' ``--data-dir`` (``tasks.core.dataset_kinds``)."""
    return load_idx(Path(params.data_dir), name, params.download_url)
