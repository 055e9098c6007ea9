"""MNIST and Fashion-MNIST: the IDX reader, its folder layouts, download, and --max-per-class."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from flows.config import RunConfig
from tasks.images import check_dataset, open_source
from tasks.sources import DatasetError, idx
from tasks.sources.download import ChecksumError, DownloadError
from tests.support.idx_fixture import idx_arrays, write_idx_files

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def _expect(source, arrays: dict) -> None:
    """The source holds the arrays' train rows, then test rows, in file order."""
    train = arrays["train-images-idx3-ubyte"]
    test = arrays["t10k-images-idx3-ubyte"]
    assert np.array_equal(source.images, np.concatenate([train, test]))
    labels = np.concatenate([arrays["train-labels-idx1-ubyte"], arrays["t10k-labels-idx1-ubyte"]])
    assert np.array_equal(source.labels, labels)
    assert source.splits.tolist() == ["train"] * len(train) + ["test"] * len(test)


@pytest.mark.parametrize(
    ("layout", "gzipped"),
    [
        (".", True),
        ("FashionMNIST/raw", False),
        ("FashionMNIST/raw", True),
        ("fashion-mnist", False),
    ],
)
def test_the_four_files_are_read_from_each_layout(tmp_path: Path, layout: str, gzipped) -> None:
    arrays = idx_arrays(n_train=30, n_test=20)
    write_idx_files(tmp_path / layout, arrays, gzipped=gzipped)
    source = idx.load_idx(tmp_path, "fashion-mnist")
    _expect(source, arrays)
    assert source.info.class_names[0] == "t-shirt_top"
    assert source.info.class_names[9] == "ankle_boot"
    table = next(source.chunks(100))  # grayscale PNGs, names from the built-in list
    assert table.num_rows == 50
    assert table.column("class_name")[0].as_py() == source.info.class_names[source.labels[0]]


def test_the_images_table_holds_the_pixels(tmp_path: Path) -> None:
    import io

    from PIL import Image

    arrays = idx_arrays(n_train=10, n_test=10)
    write_idx_files(tmp_path, arrays)
    table = next(idx.load_idx(tmp_path, "mnist").chunks(5))
    png = table.column("image")[3].as_py()["bytes"]
    decoded = np.asarray(Image.open(io.BytesIO(png)))
    assert np.array_equal(decoded, arrays["train-images-idx3-ubyte"][3])
    assert (
        table.column("class_name")
        .to_pylist()[0]
        .endswith(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))
    )


def test_a_truncated_or_foreign_file_is_refused_in_one_line(tmp_path: Path) -> None:
    arrays = idx_arrays(n_train=10, n_test=10)
    write_idx_files(tmp_path, arrays, gzipped=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated") as error:
        idx.load_idx(tmp_path, "fashion-mnist")
    assert "\n" not in str(error.value)
    images.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(DatasetError, match="not an IDX file"):
        idx.load_idx(tmp_path, "fashion-mnist")
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"x" * 10)[:-4])
    with pytest.raises(DatasetError, match="does not unpack"):
        idx.load_idx(tmp_path, "fashion-mnist")


def test_labels_beyond_the_classes_are_refused(tmp_path: Path) -> None:
    arrays = idx_arrays(n_train=24, n_test=12, n_classes=12)
    write_idx_files(tmp_path, arrays)
    with pytest.raises(DatasetError, match="another dataset"):
        idx.load_idx(tmp_path, "mnist")


def test_download_checks_each_file_and_writes_torchvisions_layout(tmp_path: Path) -> None:
    arrays = idx_arrays(n_train=20, n_test=10)
    md5 = write_idx_files(tmp_path / "mirror", arrays)
    mirror = (tmp_path / "mirror").as_uri()
    data = tmp_path / "data"
    folder = idx.download_idx(data, idx.VARIANTS["fashion-mnist"], url=mirror, md5=md5)
    assert folder == data / "FashionMNIST" / "raw"
    assert sorted(p.name for p in folder.iterdir()) == sorted(md5)
    _expect(idx.load_idx(data, "fashion-mnist"), arrays)
    assert [p.name for p in data.iterdir()] == ["FashionMNIST"]  # no temporary left

    other = tmp_path / "other"
    wrong = {**md5, "t10k-labels-idx1-ubyte.gz": "0" * 32}
    with pytest.raises(ChecksumError, match="md5"):
        idx.download_idx(other, idx.VARIANTS["fashion-mnist"], url=mirror, md5=wrong)
    assert not (other / "FashionMNIST").exists()  # nothing half-downloaded looks like a dataset


def test_offline_is_one_line_naming_the_way_out(tmp_path: Path) -> None:
    # port 9 on the loopback: nothing listens, the connection is refused at once
    with pytest.raises(DownloadError) as error:
        idx.load_idx(tmp_path, "fashion-mnist", url="http://127.0.0.1:9/fashion")
    message = str(error.value)
    assert "\n" not in message
    assert "--data-dir" in message and "dataset-fashion-mnist" in message
    assert not (tmp_path / "FashionMNIST").exists()


def test_max_per_class_keeps_a_stratified_subset_with_original_ids(tmp_path: Path) -> None:
    arrays = idx_arrays(n_train=200, n_test=100)
    write_idx_files(tmp_path, arrays)
    config = RunConfig(dataset="fashion-mnist", data_dir=str(tmp_path), max_per_class=3)
    source = open_source(config)
    assert len(source) == 10 * 3 * 2
    for split in ("train", "test"):
        counts = np.bincount(source.labels[source.splits == split], minlength=10)
        assert counts.tolist() == [3] * 10
    whole = idx.load_idx(tmp_path, "fashion-mnist")
    assert np.array_equal(whole.images[source.sample_ids], source.images)
    table = next(source.chunks(1000))
    assert table.column("sample_id").to_pylist() == source.sample_ids.tolist()
    again = open_source(config)
    assert np.array_equal(again.sample_ids, source.sample_ids)  # drawn with --seed
    other = open_source(config.model_copy(update={"seed": 1}))
    assert not np.array_equal(other.sample_ids, source.sample_ids)


def test_max_per_class_is_refused_where_it_cannot_apply(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="built-in datasets only"):
        RunConfig(dataset=f"imagefolder:{tmp_path}", max_per_class=5)
    with pytest.raises(ValueError, match="planted defects"):
        RunConfig(dataset="synthetic", synthetic_defects=True, max_per_class=5)


def test_the_datasets_are_known_to_the_cli_and_the_preflight() -> None:
    for name in ("fashion-mnist", "mnist"):
        assert check_dataset(RunConfig(dataset=name)) == 10
    with pytest.raises(ValueError, match="fashion-mnist"):
        RunConfig(dataset="fashionmnist")


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debians_fashion_mnist_reads_as_published() -> None:
    source = idx.load_idx(DEBIAN, "fashion-mnist")
    assert source.images.shape == (70_000, 28, 28)
    for split, per_class in (("train", 6000), ("test", 1000)):
        counts = np.bincount(source.labels[source.splits == split])
        assert counts.tolist() == [per_class] * 10
    # the first training image of the published file is an ankle boot (label 9)
    assert source.info.class_names[source.labels[0]] == "ankle_boot"
