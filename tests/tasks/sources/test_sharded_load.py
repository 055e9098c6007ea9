"""Loading a sharded source: one images part per source shard, pointers not bytes, resumable."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from storage import registry
from storage.fs import Location
from tasks.sources import DatasetError
from tasks.sources.sharded_load import (
    INDEX_FOLDER,
    SOURCES_FILE,
    ShardedSource,
    image_bytes,
    index_into,
    load_sharded,
    with_image_bytes,
)
from tests.support.sharded_fixture import CLASSES, pictures, write_hf_parquet, write_tars


def _parts(target: Location) -> pa.Table:
    return registry.table("images").read(target)


def test_webdataset_parts_hold_pointers_and_extraction_reads_the_bytes(tmp_path: Path) -> None:
    items = pictures(per_class=3, test_per_class=1)
    write_tars(tmp_path / "wds", items, per_shard=4, label="name")
    source = ShardedSource("webdataset", str(tmp_path / "wds"), label_field="name")
    target = Location(str(tmp_path / "out"))
    written, info = load_sharded(source, target, "webdataset:x")
    assert list(written) == [f"part-{i:05d}.parquet" for i in range(4)] + [SOURCES_FILE]
    assert info["class_names"] == sorted(CLASSES) and info["has_test_split"]
    assert info["rows"] == len(items) and info["skipped_files"] == []
    assert not target.exists(INDEX_FOLDER)
    table = _parts(target)
    assert table.column("image").null_count == table.num_rows  # nothing copied
    expected = [i for i in items if i.split == "test"] + [i for i in items if i.split == "train"]
    assert image_bytes(table) == [i.data for i in expected]
    filled = with_image_bytes(table.slice(2, 3))
    assert filled.column("image").combine_chunks().field("bytes").to_pylist() == [
        i.data for i in expected[2:5]
    ]
    assert filled.column("image")[0]["path"].as_py() == expected[2].name


def test_a_killed_load_resumes_from_the_shards_already_indexed(tmp_path: Path) -> None:
    items = pictures(per_class=2, test_per_class=1)
    write_hf_parquet(tmp_path / "hf", items, files_per_split=1)
    source = ShardedSource("parquet", str(tmp_path / "hf"))
    target = Location(str(tmp_path / "out"))
    shards, columns = source.check()
    index_into(source, columns, shards[0], 0, target.child(INDEX_FOLDER))  # then killed
    # the indexed shard is not read again: even made unreadable, its index is used
    first = Path(shards[0].url)
    saved = first.read_bytes()
    first.write_bytes(b"gone")
    _, info = load_sharded(source, target, "parquet:x")
    assert info["rows"] == len(items) and info["skipped_files"] == []
    first.write_bytes(saved)
    assert image_bytes(_parts(target))[:3] == [i.data for i in items if i.split == "test"]


def test_classes_without_images_are_refused(tmp_path: Path) -> None:
    items = [i for i in pictures(per_class=2, test_per_class=0) if i.class_name != "pear"]
    write_tars(tmp_path / "wds", items)  # cls labels 0 and 2 with names from a file
    names = tmp_path / "names.txt"
    names.write_text("\n".join(CLASSES))
    source = ShardedSource("webdataset", str(tmp_path / "wds"), class_names_file=str(names))
    with pytest.raises(DatasetError, match="without images: pear"):
        load_sharded(source, Location(str(tmp_path / "out")), "webdataset:x")
