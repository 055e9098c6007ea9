"""Storage: atomic writes, manifests that notice damage, schema-checked Parquet, run records."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from storage.finished_run import FinishedRun
from storage.fs import Location
from storage.layout import OutputLayout, slug
from storage.manifest import (
    MANIFEST_NAME,
    StageManifest,
    intact_or_cleared,
    read_manifest,
    record_file,
    valid_manifest,
    write_manifest,
)
from storage.runs import RunRecord, StageEntry, read_latest, run_record, write_run_record
from storage.schemas.images import embeddings_schema
from storage.tables import conform, read_parquet, read_shards, shard_name, write_parquet


def _embeddings(n: int, dim: int, start: int = 0) -> pa.Table:
    vectors = np.random.default_rng(start).normal(size=(n, dim)).astype(np.float32)
    return pa.table(
        {
            "sample_id": np.arange(start, start + n),
            "split": ["train"] * n,
            "label": np.zeros(n, dtype=np.int32),
            "class_name": ["a"] * n,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        }
    )


def test_atomic_write_leaves_no_file_when_the_writer_fails(tmp_path: Path) -> None:
    location = Location(str(tmp_path / "stage"))
    with pytest.raises(RuntimeError), location.atomic_open("table.parquet") as handle:
        handle.write(b"half")
        raise RuntimeError("killed")
    assert location.listdir() == []


def test_remove_temporaries_clears_leftovers_of_a_killed_write(tmp_path: Path) -> None:
    location = Location(str(tmp_path))
    (tmp_path / "part-00000.parquet.tmp-1234abcd").write_bytes(b"x")
    location.write_bytes("keep.json", b"{}")
    assert location.remove_temporaries() == ["part-00000.parquet.tmp-1234abcd"]
    assert location.listdir() == ["keep.json"]


def test_parquet_round_trip_keeps_the_schema(tmp_path: Path) -> None:
    location = Location(str(tmp_path))
    schema = embeddings_schema(8)
    write_parquet(location, shard_name(0), _embeddings(5, 8), schema)
    write_parquet(location, shard_name(1), _embeddings(3, 8, start=5), schema)
    table = read_shards(location)
    assert table.schema.equals(schema)
    assert table.column("sample_id").to_pylist() == list(range(8))
    assert pl.read_parquet(tmp_path / "part-00000.parquet")["embedding"].dtype == pl.Array(
        pl.Float32, 8
    )
    count = duckdb.sql(f"select count(*) from '{tmp_path}/part-*.parquet'").fetchall()[0][0]
    assert count == 8


def test_conform_names_missing_and_unexpected_columns() -> None:
    table = _embeddings(2, 4).drop(["split"]).append_column("extra", pa.array([1, 2]))
    with pytest.raises(ValueError, match=r"missing \['split'\], unexpected \['extra'\]"):
        conform(table, embeddings_schema(4))


def _manifest(tmp_path: Path) -> StageManifest:
    location = Location(str(tmp_path / "stage"))
    rows = write_parquet(location, "t.parquet", _embeddings(4, 4), embeddings_schema(4))
    manifest = StageManifest(
        stage="s",
        key="k",
        url=location.url,
        code_version="c",
        files={"t.parquet": record_file(location, "t.parquet", rows)},
    )
    return write_manifest(manifest)


def test_manifest_round_trip_and_fingerprint(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    again = read_manifest(manifest.location)
    assert again == manifest
    assert again.rows == 4
    assert read_parquet(manifest.location, "t.parquet").num_rows == 4
    assert len(manifest.fingerprint) == 16


def test_manifest_notices_missing_and_truncated_files(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    path = tmp_path / "stage" / "t.parquet"
    path.write_bytes(path.read_bytes()[:-10])
    assert "t.parquet changed size" in manifest.problems()[0]
    assert valid_manifest(manifest.location) is None
    path.unlink()
    assert manifest.problems() == ["t.parquet is missing"]


def test_a_same_size_change_is_found_by_verify_and_by_the_cache_hit_check(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    assert manifest.verify_hashes() == []
    path = tmp_path / "stage" / "t.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert manifest.verify_hashes() == [("t.parquet", "sha256 differs from its manifest")]
    # the cache-hit check finds it too, and leaves the file where it is (inspecting changes nothing)
    assert manifest.problems() == ["t.parquet changed content"]
    assert path.exists()
    # the stage about to recompute removes it, and the manifest that described it
    assert intact_or_cleared(manifest.location) is None
    assert not path.exists()
    assert read_manifest(manifest.location) is None


def test_an_intact_stage_folder_is_kept_and_one_without_manifest_left_alone(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    path = tmp_path / "stage" / "t.parquet"
    assert intact_or_cleared(manifest.location) == manifest
    assert path.exists() and read_manifest(manifest.location) == manifest
    (tmp_path / "stage" / MANIFEST_NAME).unlink()
    assert intact_or_cleared(manifest.location) is None  # nothing to compare against
    assert path.exists()


def test_unwritable_output_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match=r"cannot write to output location .*--out"):
        Location(str(blocker / "out")).check_writable()


def test_layout_separates_parameter_sets(tmp_path: Path) -> None:
    layout = OutputLayout.at(str(tmp_path))
    a = layout.stage_key("overlap", {"k": 2})
    b = layout.stage_key("overlap", {"k": 3})
    assert a != b and a == layout.stage_key("overlap", {"k": 2})
    assert layout.stage_dir("imagefolder:/x/y", "images", a).url.endswith(
        f"imagefolder-x-y/images/{a}"
    )
    assert slug("a b/c") == "a-b-c"
    # a WebDataset's output folder is not named like an archive file
    assert slug("webdataset:/d/train-{000..009}.tar") == "webdataset-d-train--000..009--tar"
    assert slug("webdataset:/d/x.TAR.gz") == "webdataset-d-x-TAR-gz"


def test_run_record_is_written_and_is_latest(tmp_path: Path) -> None:
    layout = OutputLayout.at(str(tmp_path))
    manifest = _manifest(tmp_path)
    record = run_record({"dataset": "synthetic"}, {"embeddings": manifest})
    write_run_record(layout, record)
    assert read_latest(layout) == record
    assert (tmp_path / "runs" / f"{record.name}.json").is_file()
    assert record.stages["embeddings"].rows == {"t.parquet": 4}
    written = json.loads((tmp_path / "latest.json").read_text())
    assert list(written) == ["name", "finished", "params", "stages"]  # no extras: none given


def test_a_finished_run_reads_its_sharded_tables(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "synthetic" / "embeddings" / "k"
    table = _embeddings(4, 4)
    write_parquet(Location(str(folder)), shard_name(0), table, embeddings_schema(4))
    entry = StageEntry(url=str(folder), key="k", tables={}, rows={})
    record = RunRecord(name="r", finished="", params={}, stages={"embeddings": entry})
    run = FinishedRun(Location(str(tmp_path / "out")), record, "r")
    assert run.table("embeddings").equals(read_shards(Location(str(folder))))
    assert run.table("class_similarity") is None  # a stage the run did not record
