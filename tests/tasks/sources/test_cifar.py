"""CIFAR-100's class indices, checked against real images labelled by others (foolbox 3.3.4).

foolbox ships the first 20 CIFAR-100 test images, the fine label in each file name; cleanlab's
label-errors repository publishes all 10,000 test labels in order (tests/data); the class names
are CIFAR-100's own, in label order. The two publications must agree, and the tool's reader of
the official pickles must hand each image its label, name and superclass unchanged.
"""

from __future__ import annotations

import csv
import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.sources import cifar
from tests.support.paths import TEST_DATA

foolbox = pytest.importorskip("foolbox")
FOOLBOX_DATA = Path(foolbox.__file__).parent / "data"
REAL = TEST_DATA / "cifar100-test-predictions"


def foolbox_cifar100() -> tuple[np.ndarray, np.ndarray]:
    """foolbox's CIFAR-100 images (20 x 32 x 32 x 3) and their labels, in file order."""
    files = sorted(FOOLBOX_DATA.glob("cifar100_*.png"))
    labels = [int(re.fullmatch(r"cifar100_\d+_(\d+)\.png", f.name).group(1)) for f in files]
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    return images, np.asarray(labels)


def cifar100_classes() -> list[dict[str, str]]:
    with (REAL / "classes.tsv").open() as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def write_official_pickles(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """A cifar-100-python folder in the official format, its test batch holding ``images``."""
    classes = cifar100_classes()
    coarse_names = {int(c["coarse_label"]): c["coarse_name"] for c in classes}
    coarse = [int(classes[label]["coarse_label"]) for label in labels]
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    # the official layout: N x 3072 rows, channel-planar (all red, all green, all blue)
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    batch = {
        b"data": rows,
        b"fine_labels": labels.tolist(),
        b"coarse_labels": coarse,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    meta = {
        b"fine_label_names": [c["class_name"].encode() for c in classes],
        b"coarse_label_names": [coarse_names[i].encode() for i in range(len(coarse_names))],
    }
    for name, record in (("train", batch), ("test", batch), ("meta", meta)):
        (folder / name).write_bytes(pickle.dumps(record))
    return folder


def test_foolbox_and_cleanlab_agree_on_the_first_test_images() -> None:
    _images, labels = foolbox_cifar100()
    published = np.load(REAL / "test_labels.npy")
    assert len(labels) == 20 and labels.tolist() == published[:20].tolist()


def test_the_class_names_are_cifar100s_own_order() -> None:
    names = [c["class_name"] for c in cifar100_classes()]
    assert len(names) == 100 and names == sorted(names)  # CIFAR-100 numbers its classes A to Z
    # what the first test images are, by their published labels
    labels = foolbox_cifar100()[1]
    assert [names[i] for i in labels[:4]] == ["mountain", "forest", "seal", "mushroom"]


def test_the_reader_keeps_each_images_label_name_and_superclass(tmp_path: Path) -> None:
    images, labels = foolbox_cifar100()
    folder = write_official_pickles(tmp_path, images, labels)
    source = cifar.read_cifar(folder, "cifar100")
    test = source.splits == "test"
    assert np.array_equal(source.images[test], images)
    assert source.labels[test].tolist() == labels.tolist()
    classes = cifar100_classes()
    table = next(source.chunks(1000)).to_pandas()
    table = table[table["split"] == "test"]
    assert table["class_name"].tolist() == [classes[i]["class_name"] for i in labels]
    assert table["coarse_name"].tolist() == [classes[i]["coarse_name"] for i in labels]
    first = np.asarray(Image.open(io.BytesIO(table["image"].iloc[0]["bytes"])))
    assert np.array_equal(first, images[0])
