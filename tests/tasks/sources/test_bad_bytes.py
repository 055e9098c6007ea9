"""Bad bytes and labels from every source kind: one policy (skipped by name and counted, or
refused in one line) at load, before any model is built."""

from __future__ import annotations

import logging
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from prefect.logging import disable_run_logger

from flows.config import RunConfig
from storage.manifest import StageManifest
from storage.tables import read_shards
from tasks.embeddings import embeddings_task
from tasks.images import images_task
from tasks.sources import DatasetError
from tests.support.sharded_fixture import add_member, hf_table, pictures, write_tars

pytestmark = pytest.mark.usefixtures("prefect_server")


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG whose header says ``width`` x ``height`` gray pixels: Pillow sees the size on open."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4)  # a few rows: never decoded past the header
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def load(dataset: str, out: Path, **overrides: object) -> StageManifest:
    config = RunConfig(dataset=dataset, out=str(out), shard_size=50, **overrides)
    with disable_run_logger():
        return images_task.fn(config.params.images)


def embed(images: StageManifest, out: Path) -> StageManifest:
    config = RunConfig(
        dataset="synthetic", out=str(out), model="vit_tiny_patch16_224", pretrained=False,
        image_size=16, batch_size=8, device="cpu",
    )  # fmt: skip
    with disable_run_logger():
        return embeddings_task.fn(images, config.params.embeddings)


def test_undecodable_parquet_rows_are_skipped_by_name_and_the_rest_embedded(
    tmp_path: Path,
) -> None:
    table = hf_table(pictures(3, 0))
    images = table.column("image").combine_chunks()
    data = images.field("bytes").to_pylist()
    data[1], data[4] = b"not an image at all", bomb_png()
    fixed = pa.StructArray.from_arrays(
        [pa.array(data, pa.binary()), images.field("path")], fields=list(images.type)
    )
    pq.write_table(table.set_column(0, "image", fixed), tmp_path / "train.parquet")
    manifest = load(f"parquet:{tmp_path / 'train.parquet'}", tmp_path / "out")
    assert manifest.info["skipped_files"] == ["train.parquet#1", "train.parquet#4"]
    assert manifest.info["rows"] == 7
    embeddings = embed(manifest, tmp_path / "out")
    assert read_shards(embeddings.location).num_rows == 7


def test_an_undecodable_webdataset_member_is_skipped_by_name(tmp_path: Path) -> None:
    folder = write_tars(tmp_path / "tars", pictures(3, 0), per_shard=9)
    with tarfile.open(folder / "train-000000.tar", "a") as tar:
        add_member(tar, "garbage.png", b"\x89PNG but nothing after")
        add_member(tar, "garbage.cls", b"0")
    manifest = load(f"webdataset:{folder}/train-000000.tar", tmp_path / "out")
    assert manifest.info["skipped_files"] == ["garbage.png"]
    assert manifest.info["rows"] == 9
    assert read_shards(embed(manifest, tmp_path / "out").location).num_rows == 9


def _folder(root: Path, side: int = 8) -> Path:
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            pixels = np.full((side, side, 3), 40 * i, np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_a_decompression_bomb_in_an_image_folder_is_skipped_by_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _folder(tmp_path / "folder")
    (root / "cat" / "bomb.png").write_bytes(bomb_png())
    with caplog.at_level(logging.WARNING, logger="tasks.sources"):
        manifest = load(f"imagefolder:{root}", tmp_path / "out")
    assert manifest.info["skipped_files"] == [str(root / "cat" / "bomb.png")]
    assert manifest.info["rows"] == 6
    assert (
        f"cannot decode {root}/cat/bomb.png: 20000 x 20000 = 400000000 pixels, over the "
        "limit of 89478485 (a decompression bomb?); raise --max-image-pixels" in caplog.text
    )


def test_the_pixel_limit_is_a_setting(tmp_path: Path) -> None:
    root = _folder(tmp_path / "folder", side=40)  # 1,600 pixels each
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "dog" / "small.png")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "cat" / "small.png")
    limited = load(f"imagefolder:{root}", tmp_path / "out", max_image_pixels=1000)
    assert limited.info["rows"] == 2 and len(limited.info["skipped_files"]) == 6
    unlimited = load(f"imagefolder:{root}", tmp_path / "out", max_image_pixels=0)
    assert unlimited.info["rows"] == 8 and unlimited.info["skipped_files"] == []
    assert limited.location != unlimited.location  # the limit is part of the stage's key


@pytest.mark.parametrize("kind", [pa.string(), pa.int64()])
def test_a_null_label_is_refused_naming_its_row(tmp_path: Path, kind: pa.DataType) -> None:
    table = hf_table(pictures(2, 0)).replace_schema_metadata(None)
    labels = table.column("label").to_pylist()
    values = [str(v) if kind == pa.string() else v for v in labels]
    values[3] = None
    pq.write_table(table.set_column(1, "label", pa.array(values, kind)), tmp_path / "t.parquet")
    with pytest.raises(DatasetError, match=r"t\.parquet: row 3 has no label \(null in column"):
        load(f"parquet:{tmp_path / 't.parquet'}", tmp_path / "out")


def test_an_empty_source_says_so(tmp_path: Path) -> None:
    pq.write_table(hf_table(pictures(1, 0)).slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(DatasetError, match=r"hold no images \(0 rows\)"):
        load(f"parquet:{tmp_path / 'empty.parquet'}", tmp_path / "out")
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    with pytest.raises(DatasetError, match=r"hold no images \(0 rows\)"):
        load(f"webdataset:{tmp_path / 'empty.tar'}", tmp_path / "out")
