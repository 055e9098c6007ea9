"""CIFAR-10 and CIFAR-100: torchvision's download (checksummed), our bulk parser of the pickles."""

from __future__ import annotations

import logging
import pickle
import shutil
import tarfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


class _Variants(Mapping[str, Any]):
    """Dataset name -> torchvision's dataset class, which carries the official URL, archive md5,
    folder and file names; torchvision (and torch) load on the first lookup, not at import."""

    NAMES = ("cifar10", "cifar100")

    def __getitem__(self, name: str) -> Any:
        from torchvision import datasets

        return {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]

    def __contains__(self, name: object) -> bool:
        return name in self.NAMES

    def __iter__(self) -> Iterator[str]:
        return iter(self.NAMES)

    def __len__(self) -> int:
        return len(self.NAMES)


VARIANTS = _Variants()


def cifar_folder(root: Path, name: str) -> Path:
    """Where the extracted pickles of ``name`` live under ``root``."""
    return Path(root) / VARIANTS[name].base_folder


def download_cifar(
    root: Path, name: str, url: str | None = None, timeout: float | None = None
) -> Path:
    """Download and extract the archive unless present; md5-checked; nothing half-extracted left.

    The archive is extracted into a temporary folder and moved into place only when complete,
    so an interrupted download or extraction never leaves a folder that looks like a dataset.
    ``timeout``: seconds without data before the download counts as stalled (then retried);
    default ``download.READ_TIMEOUT_SECONDS`` (a minute).
    """
    from torchvision.datasets.utils import check_integrity, extract_archive

    spec = VARIANTS[name]
    target = cifar_folder(root, name)
    if target.is_dir():
        return target
    source = url or spec.url
    hint = f"use --download-url MIRROR, or put {spec.base_folder}/ in --data-dir"
    with download_folder(Path(root)) as tmp:
        log.info("downloading %s from %s", name, source)
        archive = tmp / spec.filename
        try:
            fetch(source, archive, timeout)
        except UnusableURLError as error:  # a retry cannot mend it: not an OSError
            raise UnusableURLError(f"could not download {name} from {error}; {hint}") from None
        except OSError as error:
            raise DownloadError(
                f"could not download {name} from {source} ({failure_reason(error)}); "
                f"check the network, {hint}"
            ) from error
        if not check_integrity(str(archive), spec.tgz_md5):
            raise ChecksumError(
                f"{source} sent an archive that fails the {name} md5 checksum "
                f"(the mirror serves another file?); {hint}"
            )
        try:
            extract_archive(archive, tmp / "extracted")
        except (EOFError, tarfile.TarError, zlib.error) as error:  # md5 passed: a retry won't mend
            raise DatasetError(
                f"the {name} archive from {source} passes its md5 check but does not unpack "
                f"({error}); put an extracted {spec.base_folder}/ in --data-dir"
            ) from None
        shutil.move(str(tmp / "extracted" / spec.base_folder), target)
    return target


def _unpickle(path: Path) -> dict:
    with path.open("rb") as handle:
        return pickle.load(handle, encoding="bytes")


def _key(record: dict, name: str) -> object:
    """Value of a pickle key, whether stored as bytes (official files) or str."""
    return record[name.encode()] if name.encode() in record else record[name]


def _decode(values: list) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _read_batches(folder: Path, files: list[list[str]], label_key: str) -> tuple:
    """Images (N x 32 x 32 x 3 uint8), labels, coarse labels or None, file names."""
    images, labels, coarse, names = [], [], [], []
    for file_name, _md5 in files:
        record = _unpickle(folder / file_name)
        data = np.asarray(_key(record, "data"), dtype=np.uint8)
        # The pickles store channel-planar rows: N x 3072 -> N x 3 x 32 x 32 -> N x 32 x 32 x 3.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(_key(record, label_key), dtype=np.int32))
        if b"coarse_labels" in record or "coarse_labels" in record:
            coarse.append(np.asarray(_key(record, "coarse_labels"), dtype=np.int32))
        names.extend(_decode(_key(record, "filenames")))
    coarse_all = np.concatenate(coarse) if coarse else None
    return np.concatenate(images), np.concatenate(labels), coarse_all, names


def _coarse_per_fine(fine: np.ndarray, coarse: np.ndarray, n_classes: int) -> list[int]:
    """The superclass of each fine label (constant within a class in CIFAR-100)."""
    mapping = np.full(n_classes, -1, dtype=np.int64)
    mapping[fine] = coarse
    return mapping.tolist()


def read_cifar(folder: Path, name: str) -> ArraySource:
    """Parse extracted CIFAR pickles in bulk: train rows first, then test."""
    spec = VARIANTS[name]
    meta = _unpickle(folder / spec.meta["filename"])
    class_names = _decode(_key(meta, spec.meta["key"]))
    label_key = "fine_labels" if name == "cifar100" else "labels"
    parts = {
        split: _read_batches(folder, files, label_key)
        for split, files in (("train", spec.train_list), ("test", spec.test_list))
    }
    images = np.concatenate([parts["train"][0], parts["test"][0]])
    labels = np.concatenate([parts["train"][1], parts["test"][1]])
    splits = np.array(["train"] * len(parts["train"][1]) + ["test"] * len(parts["test"][1]))
    coarse_labels = coarse_names = None
    if name == "cifar100":
        coarse = np.concatenate([parts["train"][2], parts["test"][2]])
        coarse_labels = _coarse_per_fine(labels, coarse, len(class_names))
        coarse_names = _decode(_key(meta, "coarse_label_names"))
    info = DatasetInfo(
        name=name,
        class_names=class_names,
        has_test_split=True,
        coarse_labels=coarse_labels,
        coarse_names=coarse_names,
    )
    paths = parts["train"][3] + parts["test"][3]
    return ArraySource(info=info, images=images, labels=labels, splits=splits, paths=paths)


def load_cifar(root: Path, name: str, url: str | None = None) -> ArraySource:
    """Download when absent (retried by the calling task), then parse."""
    return read_cifar(download_cifar(root, name, url), name)


def open_dataset(params: ImagesParams, name: str) -> ArraySource:
    """Dataset ``name`` of the images parameters' ``--data-dir`` (``tasks.core.dataset_kinds``)."""
    return load_cifar(Path(params.data_dir), name, params.download_url)
