"""The same small images written as an image folder, Hugging Face Parquet and WebDataset tars.

Parquet is written with pyarrow the way Hugging Face ``datasets`` writes it: an ``image`` struct
of (bytes, path), an int64 ``label`` and the features as JSON under the schema metadata key
``huggingface`` (``ClassLabel`` names included). Tars are written with ``tarfile`` the way
WebDataset's ``TarWriter`` does: members ``<key>.<ext>`` in sample order.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

CLASSES = ["apple", "pear", "plum"]


@dataclass(frozen=True)
class Picture:
    """One image of the fixture: its class, split, file name and encoded bytes."""

    class_name: str
    split: str
    name: str
    data: bytes


def pictures(per_class: int = 4, test_per_class: int = 1, seed: int = 0) -> list[Picture]:
    """Random 8x8 images, PNG and JPEG alternating; train rows first, then test, class-major."""
    rng = np.random.default_rng(seed)
    out = []
    for split, count in (("train", per_class), ("test", test_per_class)):
        for name in CLASSES:
            for i in range(count):
                pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
                fmt = "PNG" if i % 2 == 0 else "JPEG"
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format=fmt)
                suffix = "png" if fmt == "PNG" else "jpg"
                out.append(
                    Picture(name, split, f"{name}_{split}_{i:03d}.{suffix}", buffer.getvalue())
                )
    return out


def write_imagefolder(root: Path, items: list[Picture]) -> Path:
    """``root/<split>/<class>/<file>``."""
    for item in items:
        path = root / item.split / item.class_name / item.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.data)
    return root


def hf_metadata(class_names: list[str]) -> dict[bytes, bytes]:
    """The schema metadata ``datasets`` writes for an Image column and a ClassLabel column."""
    features = {
        "image": {"_type": "Image"},
        "label": {"names": class_names, "_type": "ClassLabel"},
    }
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def hf_table(items: list[Picture], class_names: list[str] = CLASSES) -> pa.Table:
    """Rows in the Hugging Face image-classification layout, metadata included."""
    image_type = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array([{"bytes": i.data, "path": i.name} for i in items], image_type),
            "label": pa.array([class_names.index(i.class_name) for i in items], pa.int64()),
        }
    )
    return table.replace_schema_metadata(hf_metadata(class_names))


def write_hf_parquet(
    folder: Path, items: list[Picture], files_per_split: int = 2, row_group_size: int = 3
) -> Path:
    """``folder/data/<split>-0000i-of-0000n.parquet``, as the Hub lays a dataset out."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = [i for i in items if i.split == split]
        parts = np.array_split(np.arange(len(rows)), files_per_split)
        for index, part in enumerate(parts):
            table = hf_table([rows[j] for j in part])
            name = f"{split}-{index:05d}-of-{files_per_split:05d}.parquet"
            pq.write_table(table, data / name, row_group_size=row_group_size)
    return folder


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """One regular file member."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_tars(
    folder: Path,
    items: list[Picture],
    per_shard: int = 5,
    label: str = "cls",
    class_names: list[str] = CLASSES,
) -> Path:
    """``folder/<split>-00000i.tar`` with ``<key>.<jpg|png>`` and ``<key>.cls`` or ``.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = [i for i in items if i.split == split]
        for shard, start in enumerate(range(0, len(rows), per_shard)):
            with tarfile.open(folder / f"{split}-{shard:06d}.tar", "w") as tar:
                for item in rows[start : start + per_shard]:
                    key, suffix = item.name.rsplit(".", 1)
                    add_member(tar, f"{key}.{suffix}", item.data)
                    if label == "cls":
                        add_member(
                            tar, f"{key}.cls", str(class_names.index(item.class_name)).encode()
                        )
                    else:
                        record = {label: item.class_name, "source": "fixture"}
                        add_member(tar, f"{key}.json", json.dumps(record).encode())
    return folder


@contextlib.contextmanager
def moto_s3(monkeypatch_context, bucket: str) -> Iterator[str]:
    """A moto S3 server on a free port with ``bucket``; the AWS variables point at it."""
    import fsspec
    from moto import server as moto_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = monkeypatch_context
    env.setenv("AWS_ACCESS_KEY_ID", "testing")
    env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    env.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    # s3fs caches instances by their arguments: one made for an earlier test's server (now
    # stopped) would be handed out again
    fsspec.get_filesystem_class("s3").clear_instance_cache()
    fsspec.filesystem("s3").mkdir(bucket)
    try:
        yield endpoint
    finally:
        fsspec.get_filesystem_class("s3").clear_instance_cache()
        server.stop()
