"""The WebDataset source: tar shards by brace pattern, indexed in place, read back by offset."""

from __future__ import annotations

import tarfile
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest

from tasks.sources import DatasetError
from tasks.sources import webdataset as source
from tasks.sources.shards import (
    combine,
    expand_braces,
    read_class_names,
    read_pointed,
    split_of_path,
    try_index,
)
from tests.support.sharded_fixture import CLASSES, add_member, pictures, write_tars


def load(pattern: str, class_names: list[str] | None = None, label_field: str = "label"):
    """List, index and combine like the images stage: (tables, class names, skipped)."""
    shards = source.list_webdataset(pattern)
    indexes = [try_index(lambda s: source.index_shard(s, label_field), s) for s in shards]
    return combine(indexes, f"webdataset:{pattern}", class_names)


def test_brace_patterns_expand_like_webdataset() -> None:
    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{train,test}-{0..1}.tar") == [
        "train-0.tar",
        "train-1.tar",
        "test-0.tar",
        "test-1.tar",
    ]
    assert expand_braces("s-{8..10}.tar") == ["s-8.tar", "s-9.tar", "s-10.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_split_and_key_come_from_names() -> None:
    assert split_of_path("s3://b/imagenet/train-000012.tar") == "train"
    assert split_of_path("/d/data/test-00000-of-00002.parquet") == "test"
    assert split_of_path("/d/val/0000.parquet") == "validation"
    assert split_of_path("/d/shard-000.tar") == "train"
    assert source.split_key("a/b.seg.JPG") == ("a/b", "seg.jpg")


def test_cls_shards_are_indexed_by_offset_and_read_back(tmp_path: Path) -> None:
    items = pictures(per_class=4, test_per_class=2)
    write_tars(tmp_path, items, per_shard=5)
    names_file = tmp_path / "classes.txt"
    names_file.write_text("\n".join(CLASSES) + "\n")
    pattern = str(tmp_path / "{train-{000000..000002},test-000000,test-000001}.tar")
    tables, names, skipped = load(pattern, read_class_names(str(names_file)))
    assert names == CLASSES and skipped == []
    assert [t.num_rows for t in tables] == [5, 5, 2, 5, 1]  # one table per shard
    index = pa.concat_tables(tables)
    expected = [i for i in items if i.split == "train"] + [i for i in items if i.split == "test"]
    assert index.column("sample_id").to_pylist() == list(range(len(items)))
    assert index.column("split").to_pylist() == [i.split for i in expected]
    assert index.column("class_name").to_pylist() == [i.class_name for i in expected]
    assert index.column("source_member").to_pylist() == [i.name for i in expected]
    assert index.column("source_row").to_pylist()[:6] == [0, 1, 2, 3, 4, 0]
    order = [17, 0, 5, 12, 3]
    assert read_pointed(index.take(order)) == [expected[i].data for i in order]


def test_json_labels_by_field_name(tmp_path: Path) -> None:
    items = pictures(per_class=2, test_per_class=0)
    write_tars(tmp_path, items, per_shard=10, label="fine")
    pattern = str(tmp_path / "train-000000.tar")
    with pytest.raises(DatasetError, match=r"without a 'label' field .* pass --label-field NAME"):
        load(pattern)
    tables, names, _ = load(pattern, label_field="fine")
    assert names == sorted(CLASSES)  # class names as labels: sorted
    assert tables[0].column("class_name").to_pylist() == [i.class_name for i in items]
    assert read_pointed(tables[0]) == [i.data for i in items]


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            add_member(tar, name, data)
    return path


def test_a_sample_without_label_or_image_is_one_line(tmp_path: Path) -> None:
    png = pictures(1, 0)[0].data
    _tar(tmp_path / "a.tar", {"k1.png": png, "k1.cls": b"0", "k2.png": png, "k2.txt": b"x"})
    with pytest.raises(DatasetError, match=r"sample 'k2' has an image but no label member") as e:
        load(str(tmp_path / "a.tar"))
    assert "\n" not in str(e.value)
    _tar(tmp_path / "b.tar", {"k1.png": png, "k1.cls": b"0", "k2.cls": b"1"})
    with pytest.raises(DatasetError, match=r"sample 'k2' has no image member \(.jpg"):
        load(str(tmp_path / "b.tar"))


def test_unreadable_shards_are_skipped_and_listed_then_refused(tmp_path: Path, caplog) -> None:
    items = pictures(per_class=2, test_per_class=0)
    write_tars(tmp_path, items, per_shard=3)
    good = (tmp_path / "train-000000.tar").read_bytes()
    (tmp_path / "train-000001.tar").write_bytes(good[:1200])  # cut inside a member
    (tmp_path / "train-000002.tar").write_bytes(b"not a tar at all" * 40)
    tables, _, skipped = load(str(tmp_path / "train-{000000..000002}.tar"))
    assert [Path(s).name for s in skipped] == ["train-000001.tar", "train-000002.tar"]
    assert sum(t.num_rows for t in tables) == 3
    assert "train-000002.tar" in caplog.text
    with pytest.raises(DatasetError, match=r"none of the 2 shard\(s\) could be read"):
        load(str(tmp_path / "train-{000001..000002}.tar"))


def test_a_pattern_that_matches_nothing_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"matches no tar files; pass a file, a folder"):
        source.list_webdataset(str(tmp_path / "shard-{000..003}.tar"))


def test_remote_shards_are_streamed_and_read_by_offset(tmp_path: Path) -> None:
    items = pictures(per_class=2, test_per_class=0)
    write_tars(tmp_path, items, per_shard=4)
    memory = fsspec.filesystem("memory")
    for path in sorted(tmp_path.glob("*.tar")):
        memory.pipe(f"/wds/{path.name}", path.read_bytes())
    try:
        tables, names, _ = load("memory://wds/train-{000000..000001}.tar")
        index = pa.concat_tables(tables)
        assert read_pointed(index.take([3, 0, 5])) == [items[i].data for i in (3, 0, 5)]
    finally:
        memory.rm("/wds", recursive=True)
    assert index.column("source_file").to_pylist()[0] == "memory:///wds/train-000000.tar"
    assert names == ["0", "1", "2"]
    assert index.column("class_name").to_pylist() == [
        str(CLASSES.index(i.class_name)) for i in items
    ]
