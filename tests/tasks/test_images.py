"""Load stage: CIFAR in its real on-disk format, synthetic data, image folders, bad datasets."""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.sources import cifar, synthetic
from tasks.sources.imagefolder import DatasetError, ImageFolderSource, scan_imagefolder
from tests.support.cifar_fixture import (
    FINE,
    FINE_TO_COARSE,
    cifar100_archive,
    write_cifar10,
    write_cifar100,
)
from tests.support.http_fixture import serve_file


def _png(table, row: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(table.column("image")[row]["bytes"].as_py())))


def test_cifar100_fixture_parses_like_the_official_files(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path, n_train=30, n_test=12)
    source = cifar.read_cifar(folder, "cifar100")
    raw = pickle.loads((folder / "train").read_bytes())
    assert len(source) == 42
    assert source.info.class_names == FINE
    assert source.info.coarse_labels == FINE_TO_COARSE
    assert source.info.coarse_names[2] == "trees"
    # channel-planar row -> H x W x 3: red plane first
    expected = raw[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    table = next(source.chunks(100))
    np.testing.assert_array_equal(_png(table, 0), expected)
    assert table.column("sample_id").to_pylist() == list(range(42))
    assert table.column("split").to_pylist() == ["train"] * 30 + ["test"] * 12
    assert table.column("label").to_pylist()[:30] == raw[b"fine_labels"]
    coarse = table.column("coarse_name").to_pylist()
    names = table.column("class_name").to_pylist()
    assert all(c == "trees" for c, n in zip(coarse, names, strict=True) if n == "oak_tree")
    assert table.column("image")[0]["path"].as_py() == "img_00000.png"


def test_cifar10_fixture_parses_all_batches_without_superclasses(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path, per_batch=4)
    source = cifar.read_cifar(folder, "cifar10")
    assert len(source) == 24 and source.info.coarse_labels is None
    table = next(source.chunks(100))
    assert table.column("coarse_label").null_count == 24


def test_download_checks_the_archive_and_extracts_atomically(tmp_path: Path, monkeypatch) -> None:
    archive = cifar100_archive(write_cifar100(tmp_path / "src"), tmp_path / "c.tar.gz")
    data_dir = tmp_path / "data"
    with serve_file(archive) as mirror:
        # the official md5 does not match a fixture archive: refused, nothing left behind
        with pytest.raises(cifar.ChecksumError, match="checksum"):
            cifar.download_cifar(data_dir, "cifar100", url=mirror["url"])
        assert list(data_dir.iterdir()) == []
        md5 = hashlib.md5(archive.read_bytes()).hexdigest()
        monkeypatch.setattr(cifar.VARIANTS["cifar100"], "tgz_md5", md5)
        folder = cifar.download_cifar(data_dir, "cifar100", url=mirror["url"])
    assert len(cifar.read_cifar(folder, "cifar100")) == 84


def test_synthetic_is_deterministic_and_records_its_planted_pairs() -> None:
    a, b, c = synthetic.make_synthetic(0), synthetic.make_synthetic(0), synthetic.make_synthetic(1)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape[1:] == (32, 32, 3) and a.images.dtype == np.uint8
    assert len(a.info.planted_pairs) == synthetic.N_PLANTED_PAIRS
    planted = {n for pair in a.info.planted_pairs for n in pair}
    assert len(planted) == 2 * synthetic.N_PLANTED_PAIRS
    assert set(a.splits) == {"train", "test"}
    assert next(a.chunks(50)).equals(next(b.chunks(50)))


def _image_folder(root: Path, classes: dict[str, int], split: str | None = None) -> None:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        folder = root / split / name if split else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(20 + i, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


def test_image_folder_with_train_and_test(tmp_path: Path) -> None:
    _image_folder(tmp_path, {"cat": 3, "dog": 2}, "train")
    _image_folder(tmp_path, {"cat": 1, "dog": 1}, "test")
    source = ImageFolderSource(tmp_path)
    table = next(source.chunks(100))
    assert source.info.class_names == ["cat", "dog"] and source.info.has_test_split
    assert table.column("split").to_pylist() == ["train"] * 5 + ["test"] * 2
    assert table.column("image")[0]["path"].as_py() == "train/cat/0.png"
    # original bytes are kept, not re-encoded
    assert table.column("image")[0]["bytes"].as_py() == (tmp_path / "train/cat/0.png").read_bytes()


def test_unreadable_images_are_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    _image_folder(tmp_path, {"cat": 2, "dog": 2})
    (tmp_path / "dog" / "broken.png").write_bytes(b"not an image")
    source = ImageFolderSource(tmp_path)
    table = next(source.chunks(100))
    assert table.num_rows == 4 and not source.info.has_test_split
    assert source.skipped == [str(tmp_path / "dog" / "broken.png")]
    assert "skipping unreadable image" in caplog.text


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (None, "does not exist"),
        ({}, "has 0 class sub-folder"),
        ({"cat": 2}, "has 1 class sub-folder"),
        ({"cat": 0, "dog": 0}, "holds no images"),
    ],
)
def test_bad_image_folders_are_refused(tmp_path: Path, classes, message: str) -> None:
    root = tmp_path / "images"
    if classes is not None:
        root.mkdir()
        for name, count in classes.items():
            (root / name).mkdir()
            _image_folder(root, {name: count})
    with pytest.raises(DatasetError, match=message):
        scan_imagefolder(root)
