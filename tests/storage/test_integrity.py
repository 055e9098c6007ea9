"""Content checks on a cache hit: same-size damage is found, cheaply for big files."""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from markdown_it import MarkdownIt
from matplotlib.text import Text
from PIL import Image
from prefect.logging import disable_run_logger

from flows.cli import main
from flows.verify_cmd import verify_root
from storage import escape, integrity
from storage.fs import Location
from storage.layout import class_folders, class_folders_tsv
from storage.manifest import StageManifest, read_manifest, record_file, write_manifest
from tasks.analyze_predictions import PredictionsError, read_class_names, validate_predictions
from tasks.sources import DatasetError, DatasetInfo
from tasks.sources.imagefolder import ImageFolderSource
from tasks.subset import subset_task
from tests.support.builders import ovl_config, ovl_images_stage, ovl_overlap_stage


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="none")
    return buffer.getvalue()


def big_table(rows: int) -> pa.Table:
    """Incompressible rows: the file is about 8 * rows bytes."""
    return pa.table({"x": np.random.default_rng(0).random(rows)})


def stage_with(folder: Path, name: str, data: bytes) -> StageManifest:
    """A stage folder holding one file and a manifest that records it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    location = Location(str(folder))
    manifest = StageManifest(
        stage="s", key=folder.name, url=location.url, code_version="c",
        files={name: record_file(location, name)},
    )  # fmt: skip
    return write_manifest(manifest)


def flip(path: Path, offset: int, keep_mtime: bool = False) -> None:
    """Invert 100 bytes at ``offset``: same size; optionally put the modification time back."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[offset : offset + 100] = bytes(b ^ 0xFF for b in data[offset : offset + 100])
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.fixture
def small_big(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64 kB threshold, so a test's 400 kB file counts as big (CIFAR shards are ~13-25 MB)."""
    monkeypatch.setattr(integrity, "FULL_HASH_MAX", 64 * 1024)
    monkeypatch.setattr(integrity, "SAMPLE_BLOCK", 4 * 1024)


def test_a_same_size_change_in_a_small_table_is_found(tmp_path: Path) -> None:
    manifest = stage_with(tmp_path / "k", "t.parquet", parquet_bytes(big_table(100)))
    assert manifest.problems() == []
    flip(tmp_path / "k" / "t.parquet", 200)
    assert manifest.problems() == ["t.parquet changed content"]


def test_a_table_of_another_schema_padded_to_the_same_size_is_found(tmp_path: Path) -> None:
    original = parquet_bytes(big_table(100))
    manifest = stage_with(tmp_path / "k", "t.parquet", original)
    other = parquet_bytes(pa.table({"y": ["a", "b"]}))
    footer_at = len(other) - 8 - struct.unpack("<i", other[-8:-4])[0]
    swapped = other[:footer_at] + b"\0" * (len(original) - len(other)) + other[footer_at:]
    (tmp_path / "k" / "t.parquet").write_bytes(swapped)
    assert pq.read_table(tmp_path / "k" / "t.parquet").column_names == ["y"]
    assert len(swapped) == len(original)
    assert manifest.problems() == ["t.parquet changed content"]


def test_a_rewritten_big_shard_is_rehashed_and_found(tmp_path: Path, small_big) -> None:
    manifest = stage_with(tmp_path / "k", "part-00000.parquet", parquet_bytes(big_table(50_000)))
    record = manifest.files["part-00000.parquet"]
    assert record.mtime and record.sample  # big: the cheap check has what it needs
    assert manifest.problems() == []
    # an offset no sample covers: only the modification time gives it away
    path = tmp_path / "k" / "part-00000.parquet"
    offsets = integrity.sample_offsets(path.stat().st_size)
    gap = offsets[3] + integrity.SAMPLE_BLOCK + 10
    assert gap + 100 < offsets[4]
    flip(path, gap)
    assert manifest.problems() == ["part-00000.parquet changed content"]


def test_a_big_shard_damaged_with_its_mtime_put_back_is_found_by_the_sample(
    tmp_path: Path, small_big
) -> None:
    manifest = stage_with(tmp_path / "k", "part-00000.parquet", parquet_bytes(big_table(50_000)))
    path = tmp_path / "k" / "part-00000.parquet"
    flip(path, path.stat().st_size - 300, keep_mtime=True)  # inside the footer
    assert manifest.problems() == ["part-00000.parquet changed content"]


def test_an_intact_copy_is_rehashed_once_then_checked_cheaply(
    tmp_path: Path, small_big, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = stage_with(tmp_path / "k", "part-00000.parquet", parquet_bytes(big_table(50_000)))
    path = tmp_path / "k" / "part-00000.parquet"
    os.utime(path, ns=(0, 10**18))  # what a copy without -p does: new time, same bytes
    full_reads: list[str] = []
    real = integrity.hash_file
    monkeypatch.setattr(integrity, "hash_file", lambda loc, n: full_reads.append(n) or real(loc, n))

    assert manifest.problems() == []
    assert full_reads == ["part-00000.parquet"]
    again = read_manifest(Location(str(tmp_path / "k")))
    assert again is not None and again.problems() == []
    assert full_reads == ["part-00000.parquet"]  # the new time was recorded: no second full read


def test_verify_reads_every_byte_and_names_the_damaged_file(tmp_path: Path, small_big) -> None:
    out = tmp_path / "out"
    stage_with(out / "synthetic" / "embeddings" / "k1", "part-00000.parquet",
               parquet_bytes(big_table(50_000)))  # fmt: skip
    stage_with(out / "synthetic" / "splits" / "k2", "splits.parquet", parquet_bytes(big_table(10)))
    lines: list[str] = []
    assert verify_root(str(out), lines.append) == 0
    assert lines[-1] == "2 files in 2 stage folders: every byte matches its manifest"

    path = out / "synthetic" / "embeddings" / "k1" / "part-00000.parquet"
    offsets = integrity.sample_offsets(path.stat().st_size)
    flip(path, offsets[3] + integrity.SAMPLE_BLOCK + 10, keep_mtime=True)  # the cheap check misses
    assert read_manifest(Location(str(path.parent))).problems() == []
    lines.clear()
    assert verify_root(str(out), lines.append) == 1
    assert lines == [
        f"damaged: {path.parent}/part-00000.parquet (sha256 differs from its manifest)",
        "1 of 2 files damaged; the next run recomputes the stages that wrote them",
    ]
    assert main(["verify", str(out)]) == 1
    assert main(["verify", str(tmp_path / "nothing")]) == 2


def overlap_root(out: Path) -> Path:
    """An output root whose latest run wrote one overlap_pairs table (with its manifest)."""
    pairs = pa.table(
        {"class_a": ["cat"], "class_b": ["dog"], "cosine": [0.9], "z": [3.1],
         "same_superclass": [True]}
    )  # fmt: skip
    folder = out / "synthetic" / "overlap" / "k1"
    stage_with(folder, "overlap_pairs.parquet", parquet_bytes(pairs))
    entry = {"url": str(folder), "key": "k1", "tables": {}, "rows": {}}
    record = {"name": "r", "finished": "", "params": {}, "stages": {"overlap": entry}}
    (out / "latest.json").write_text(json.dumps(record))
    return folder / "overlap_pairs.parquet"


def test_inspect_names_a_table_damaged_in_place_in_one_line(tmp_path: Path, capsys) -> None:
    table = overlap_root(tmp_path / "out")
    flip(table, 4)  # breaks the first data page, keeps the footer: still lists its rows
    assert main(["inspect", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    damaged = [line for line in captured.out.splitlines() if "DAMAGED" in line]
    assert damaged == [
        "  DAMAGED synthetic/overlap/k1/overlap_pairs.parquet: content differs from its manifest;"
        " see `overlap verify`"
    ]
    assert captured.err.startswith(f"overlap: error: {table}: Couldn't deserialize thrift")
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


def test_inspect_of_a_swapped_table_ends_in_one_line_naming_it(tmp_path: Path, capsys) -> None:
    table = overlap_root(tmp_path / "out")
    table.write_bytes(parquet_bytes(pa.table({"other": [1, 2]})))
    assert main(["inspect", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "DAMAGED synthetic/overlap/k1/overlap_pairs.parquet: " in captured.out
    assert captured.err == (
        f"overlap: error: {table}: no column class_a, class_b, cosine, z, same_superclass; "
        "not the table its stage wrote\n"
    )


def test_inspect_of_a_file_that_is_no_parquet_names_it(tmp_path: Path, capsys) -> None:
    table = overlap_root(tmp_path / "out")
    table.write_bytes(b"\0" * table.stat().st_size)
    assert main(["inspect", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "DAMAGED synthetic/overlap/k1/overlap_pairs.parquet: " in captured.out
    assert captured.err.startswith(f"overlap: error: {table}: ")
    assert captured.err.count("\n") == 1


def test_inspect_names_a_table_its_manifest_lists_but_that_is_gone(tmp_path: Path, capsys) -> None:
    table = overlap_root(tmp_path / "out")
    table.unlink()
    assert main(["inspect", str(tmp_path / "out")]) == 0
    damaged = [line for line in capsys.readouterr().out.splitlines() if "DAMAGED" in line]
    assert damaged == [
        "  DAMAGED synthetic/overlap/k1/overlap_pairs.parquet: missing (its manifest lists it);"
        " see `overlap verify`"
    ]


def test_class_folders_are_unique_safe_and_reversible() -> None:
    names = ["日本語", "中文", "chat noir", "chat-noir", "Cat", "cat", "dog", "..", "a/b"]
    folders = class_folders(names)
    assert len(set(folders.values())) == len(names)
    assert len({f.casefold() for f in folders.values()}) == len(names)
    assert folders["dog"] == "dog" and folders["chat-noir"] == "chat-noir"
    assert folders["chat noir"].startswith("chat-noir-") and folders["日本語"].startswith("x-")
    assert all("/" not in f and f not in (".", "..") for f in folders.values())
    rows = class_folders_tsv(folders).decode().splitlines()
    assert rows[0] == "folder\tclass_name"
    back = {f: json.loads(n) for f, n in (row.split("\t") for row in rows[1:])}
    assert back == {f: n for n, f in folders.items()}


def test_export_pngs_never_merges_classes_whose_names_slug_alike(tmp_path: Path) -> None:
    names = ["日本語", "中文", "chat noir", "chat-noir"]
    labels = np.tile(np.arange(4), 10)
    images = ovl_images_stage(tmp_path, labels, ["train"] * len(labels), names)
    overlap = ovl_overlap_stage(tmp_path, [0, 1, 2, 3], names)
    config = ovl_config(tmp_path, export_pngs=True, val_fraction=0.25, test_fraction=0.25)
    with disable_run_logger():
        manifest = subset_task.fn(images, overlap, config.params.subset)
    pngs = Path(manifest.location.path) / "pngs"
    rows = (pngs / "class_folders.tsv").read_text().splitlines()[1:]
    folder_of = {json.loads(n): f for f, n in (row.split("\t") for row in rows)}
    assert set(folder_of) == set(names) and len(set(folder_of.values())) == 4
    splits = pq.read_table(Path(manifest.path("splits.parquet"))).to_pylist()
    subset = pq.read_table(Path(manifest.path("subset.parquet")), columns=["sample_id"])
    assert len(splits) == subset.num_rows == 40
    for row in splits:  # every image sits in its own class's folder, and only there
        assert (
            pngs / row["split"] / folder_of[row["class_name"]] / f"{row['sample_id']}.png"
        ).exists()
    assert sum(1 for _ in pngs.glob("*/*/*.png")) == 40


def test_duplicate_class_names_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"^dataset d has duplicate class names: 'cat'; rename"):
        DatasetInfo(name="d", class_names=["cat", "dog", "cat"], has_test_split=False)
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\ncat\n")
    with pytest.raises(PredictionsError, match=f"^class-names file {names} has duplicate .*'cat'"):
        read_class_names(names)
    tsv = tmp_path / "names.tsv"
    tsv.write_text("label\tclass_name\n0\tcat\n1\tcat\n")
    with pytest.raises(PredictionsError, match="duplicate class names: 'cat'"):
        read_class_names(tsv)
    predictions = pa.table(
        {
            "y_true": [0, 1],
            "y_pred": [1, 0],
            "true_name": ["cat", "cat"],
            "pred_name": ["cat", "cat"],
        }
    )
    with pytest.raises(PredictionsError, match="true_name/pred_name columns has duplicate"):
        validate_predictions(predictions)


def test_image_folders_whose_names_normalise_alike_are_refused(tmp_path: Path) -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"  # the same text, two spellings
    for name in (composed, decomposed):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(folder / "0.png")
    if len(list((tmp_path / "data").iterdir())) < 2:
        pytest.skip("this file system normalises names itself")
    with pytest.raises(DatasetError, match="duplicate class names: 'café'"):
        ImageFolderSource(tmp_path / "data")


def test_each_output_kind_shows_a_hostile_name_as_text() -> None:
    name = "<b>x</b> | `y` *z* [a](b) \x1b[31m\r\0 \u202e $\\alpha$"
    shown = "<b>x</b> | `y` *z* [a](b) \\x1b[31m\\r\\0 \\u202e $\\alpha$"
    assert escape.terminal(name) == shown
    assert escape.html(name).startswith("&lt;b&gt;x&lt;/b&gt; | `y`")
    html = MarkdownIt("commonmark").render(escape.markdown(name))
    assert html == f"<p>{escape.html(name)}</p>\n"  # markdown renders back to the plain text
    table = (
        MarkdownIt("commonmark")
        .enable("table")
        .render(f"| a |\n| --- |\n| {escape.markdown(name)} |\n")
    )
    assert table.count("<td>") == 1
    assert Text(0, 0, escape.mathtext(name))._preprocess_math(escape.mathtext(name)) == (
        shown,
        False,
    )
