"""The Parquet source: Hugging Face layout and plain tables, indexed in place, read by pointer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.sources import DatasetError
from tasks.sources import parquet as source
from tasks.sources.shards import combine, read_class_names, read_pointed, try_index
from tests.support.sharded_fixture import CLASSES, hf_table, moto_s3, pictures, write_hf_parquet

BUCKET = "sources-test"


def load(spec: str, class_names: list[str] | None = None, **flags: str | None):
    """List, check, index and combine like the images stage: (tables, class names, skipped)."""
    shards = source.list_parquet(spec)
    columns, unreadable = source.check_source(shards, spec, **flags)
    readable = [s for s in shards if s.url not in {u.shard.url for u in unreadable}]
    indexes = unreadable + [
        try_index(lambda s: source.index_shard(s, columns), r) for r in readable
    ]
    return combine(indexes, f"parquet:{spec}", class_names)


def test_hf_layout_is_indexed_without_its_bytes_and_read_back_by_pointer(tmp_path: Path) -> None:
    items = pictures(per_class=4, test_per_class=2)
    write_hf_parquet(tmp_path, items, files_per_split=2, row_group_size=3)
    tables, names, skipped = load(str(tmp_path))
    assert names == CLASSES and skipped == []  # ClassLabel names from the schema metadata
    assert len(tables) == 4  # one table per source file
    index = pa.concat_tables(tables)
    assert "image" not in index.column_names
    assert index.column("sample_id").to_pylist() == list(range(len(items)))
    # listing order: data/test-* before data/train-*; splits from the Hub's file names
    expected = [i for i in items if i.split == "test"] + [i for i in items if i.split == "train"]
    assert index.column("split").to_pylist() == [i.split for i in expected]
    assert index.column("class_name").to_pylist() == [i.class_name for i in expected]
    assert index.column("label").to_pylist() == [CLASSES.index(i.class_name) for i in expected]
    assert set(index.column("source_member").to_pylist()) == {"image"}
    assert index.column("source_offset").null_count == index.num_rows
    # any rows, in any order, across files and row groups: the original bytes
    order = [7, 0, 14, 3, 9, 2]
    data = read_pointed(index.take(order))
    assert data == [expected[i].data for i in order]


def test_plain_bytes_string_labels_and_a_split_column_by_flags(tmp_path: Path) -> None:
    items = pictures(per_class=2, test_per_class=1)
    table = pa.table(
        {
            "jpeg_data": pa.array([i.data for i in items], pa.binary()),
            "thumb": pa.array([i.data[:10] for i in items], pa.binary()),
            "species": pa.array([i.class_name for i in items]),
            "subset": pa.array([i.split for i in items]),
        }
    )
    pq.write_table(table, tmp_path / "all.parquet")
    with pytest.raises(DatasetError, match=r"no image column found .* pass --image-column NAME"):
        load(str(tmp_path / "all.parquet"))
    tables, names, _ = load(
        str(tmp_path / "*.parquet"), image="jpeg_data", label="species", split="subset"
    )
    index = tables[0]
    assert names == sorted(CLASSES)  # string labels: sorted class names
    assert index.column("split").to_pylist() == [i.split for i in items]
    assert read_pointed(index) == [i.data for i in items]


def test_integer_labels_take_names_from_a_class_names_file(tmp_path: Path) -> None:
    items = pictures(per_class=1, test_per_class=0)
    table = hf_table(items).replace_schema_metadata(None)  # no Hugging Face features
    pq.write_table(table, tmp_path / "x.parquet")
    names_file = tmp_path / "names.txt"
    names_file.write_text("red\ngreen\nblue\n")
    _, names, _ = load(str(tmp_path / "x.parquet"), read_class_names(str(names_file)))
    assert names == ["red", "green", "blue"]
    _, names, _ = load(str(tmp_path / "x.parquet"))
    assert names == ["0", "1", "2"]  # without names the numbers are the names
    names_file.write_text("red\ngreen\n")
    with pytest.raises(DatasetError, match=r"label 2 has no class name .*--class-names"):
        load(str(tmp_path / "x.parquet"), read_class_names(str(names_file)))


@pytest.mark.parametrize(
    ("columns", "flags", "message"),
    [
        (["image"], {}, "no label column found among image .* pass --label-column NAME"),
        (["label"], {}, "no image column found .* pass --image-column NAME"),
        (["image", "label"], {"label": "fine"}, "no column 'fine' .* fix --label-column"),
        (["image", "label"], {"image": "label"}, "'label' is int64, not a .*--image-column"),
    ],
)
def test_missing_or_wrong_columns_are_one_line(tmp_path, columns, flags, message) -> None:
    pq.write_table(hf_table(pictures(1, 0)).select(columns), tmp_path / "t.parquet")
    with pytest.raises(DatasetError, match=message) as error:
        load(str(tmp_path), **flags)
    assert "\n" not in str(error.value)


def test_unreadable_files_are_skipped_and_listed_then_refused_when_none_is_left(
    tmp_path: Path, caplog
) -> None:
    write_hf_parquet(tmp_path, pictures(2, 1), files_per_split=1)
    broken = tmp_path / "data" / "train-00009-of-00009.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    tables, _, skipped = load(str(tmp_path))
    assert skipped == [str(broken)]
    assert sum(t.num_rows for t in tables) == 9
    assert "train-00009-of-00009.parquet" in caplog.text
    with pytest.raises(DatasetError, match=r"none of the 1 file.* readable Parquet"):
        load(str(broken))


def test_a_file_with_images_by_path_only_is_refused(tmp_path: Path) -> None:
    table = hf_table(pictures(1, 0))
    image = table.column("image").combine_chunks()
    no_bytes = pa.StructArray.from_arrays(
        [pa.nulls(len(image), pa.binary()), image.field("path")], fields=list(image.type)
    )
    table = table.set_column(0, "image", no_bytes)
    pq.write_table(table, tmp_path / "paths.parquet")
    with pytest.raises(DatasetError, match=r"3 row.* hold no image bytes"):
        load(str(tmp_path))


def test_fingerprints_follow_the_content_and_patterns_select_files(tmp_path: Path) -> None:
    write_hf_parquet(tmp_path, pictures(2, 1), files_per_split=2)
    data = tmp_path / "data"
    listed = source.list_parquet(str(data / "train-{00000,00001}-of-00002.parquet"))
    assert [Path(s.url).name for s in listed] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert source.list_parquet(str(data / "train-*.parquet")) == listed
    before = listed[0].fingerprint
    path = Path(listed[0].url)
    os.utime(path, ns=(1, path.stat().st_mtime_ns + 10**9))
    assert source.list_parquet(listed[0].url)[0].fingerprint != before
    with pytest.raises(DatasetError, match="matches no parquet/pq files"):
        source.list_parquet(str(tmp_path / "nothing-*.parquet"))


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """A moto S3 server with a bucket; the standard AWS variables point at it."""
    pytest.importorskip("s3fs")
    with pytest.MonkeyPatch.context() as env, moto_s3(env, BUCKET) as endpoint:
        yield endpoint


def test_hf_parquet_in_a_bucket_is_read_in_place(tmp_path: Path, s3: str) -> None:
    items = pictures(per_class=2, test_per_class=1)
    write_hf_parquet(tmp_path, items, files_per_split=1)
    fs = fsspec.filesystem("s3")
    fs.put(str(tmp_path / "data"), f"{BUCKET}/hf/", recursive=True)
    shards = source.list_parquet(f"s3://{BUCKET}/hf/data/")
    assert [s.url.rsplit("/", 1)[-1] for s in shards] == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
    ]
    assert all(s.url.startswith("s3://") and s.version.startswith("ETag=") for s in shards)
    tables, names, _ = load(f"s3://{BUCKET}/hf/data/")
    index = pa.concat_tables(tables)
    expected = [i for i in items if i.split == "test"] + [i for i in items if i.split == "train"]
    assert names == CLASSES
    assert read_pointed(index) == [i.data for i in expected]


def test_a_bucket_without_credentials_is_one_line(s3: str, monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookups
    fsspec.filesystem("s3").clear_instance_cache()
    try:
        with pytest.raises(DatasetError, match="no credentials found; set AWS_ACCESS_KEY_ID"):
            source.list_parquet(f"s3://{BUCKET}/hf/data/")
    finally:
        fsspec.filesystem("s3").clear_instance_cache()
