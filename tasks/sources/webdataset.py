"""``webdataset:PATTERN``: WebDataset tar shards, indexed in place.

A sample is the tar members that share a key (the member name up to the first dot of its file
name, as WebDataset groups them): one image member (``jpg``, ``jpeg``, ``png``, ``webp``) and a
label member (``cls``: the label as text; or ``json`` with the label in a field named by
``--label-field``). The split is the one the shard's path names (``train-000000.tar``), else
train. Indexing reads the tar headers and the label members and records each image member's
byte offset and size, so extraction reads exactly those bytes and nothing is copied.
"""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from tasks.sources import DatasetError
from tasks.sources.shards import (
    ShardIndex,
    SourceShard,
    UnreadableShardError,
    list_shards,
    pointer_columns,
    split_of_path,
)

SUFFIXES = (".tar",)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
LABEL_EXTENSIONS = ("cls", "json")
DEFAULT_LABEL_FIELD = "label"
# remote shards are streamed in large reads: one request per tar header would be far slower
STREAM_BLOCK = 16 * 2**20


@dataclass
class Sample:
    """The members of one sample: where its image is, and its label members' content."""

    key: str
    image: tuple[str, int, int] | None = None  # member name, data offset, size
    labels: dict[str, bytes] = field(default_factory=dict)  # extension -> content


def split_key(name: str) -> tuple[str, str]:
    """(key, extension) of a member name: ``a/b.seg.jpg`` -> (``a/b``, ``seg.jpg``)."""
    folder, base = posixpath.split(name)
    stem, _, extension = base.partition(".")
    return posixpath.join(folder, stem), extension.lower()


def _scan(tar: tarfile.TarFile, shard: SourceShard) -> list[Sample]:
    """The tar's samples in member order; image data located, label members read."""
    samples: dict[str, Sample] = {}
    for member in tar:
        if not member.isfile():
            continue
        if member.offset_data + member.size > shard.size:  # tarfile stops quietly at a cut
            raise UnreadableShardError(f"member {member.name} ends past the file's end")
        key, extension = split_key(member.name)
        sample = samples.setdefault(key, Sample(key))
        if extension in IMAGE_EXTENSIONS and sample.image is None:
            sample.image = (member.name, member.offset_data, member.size)
        elif extension in LABEL_EXTENSIONS:
            handle = tar.extractfile(member)
            sample.labels[extension] = handle.read() if handle else b""
    # tarfile also ends quietly at a header cut short; a whole tar has its end marker left
    if tar.offset + tarfile.BLOCKSIZE > shard.size:
        raise UnreadableShardError("the tar ends inside a header: the file is cut short")
    return list(samples.values())


def _scalar(text: str) -> int | str:
    """An integer label when the text is one, else the text (a class name)."""
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def label_of(sample: Sample, label_field: str, where: str) -> int | str:
    """A sample's label: its ``cls`` member, else field ``label_field`` of its ``json`` member."""
    if "cls" in sample.labels:
        return _scalar(sample.labels["cls"].decode("utf-8").strip())
    if "json" in sample.labels:
        try:
            record = json.loads(sample.labels["json"])
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get(label_field), int | str):
            value = record[label_field]
            return _scalar(value) if isinstance(value, str) else value
        raise DatasetError(
            f"{where}: sample {sample.key!r} has a .json member without a {label_field!r} field "
            "(a number or a class name); pass --label-field NAME"
        )
    raise DatasetError(
        f"{where}: sample {sample.key!r} has an image but no label member (.cls, or .json with "
        f"field {label_field!r}); add one to every sample"
    )


def _raw_label_array(labels: list[int | str], where: str) -> pa.Array:
    kinds = {type(label) for label in labels}
    if len(kinds) > 1:
        raise DatasetError(f"{where}: labels mix numbers and class names; use one kind")
    return pa.array(labels, pa.string() if kinds == {str} else pa.int64())


def samples_table(samples: list[Sample], shard: SourceShard, label_field: str) -> pa.Table:
    """Rows (one per sample): split, raw_label and the pointer to the image member's bytes."""
    where = f"webdataset shard {shard.url}"
    images = [s for s in samples if s.image is not None]
    orphans = [s.key for s in samples if s.image is None]
    if orphans:
        raise DatasetError(
            f"{where}: sample {orphans[0]!r} has no image member "
            f"({', '.join('.' + e for e in IMAGE_EXTENSIONS)}); add one or remove the sample"
        )
    labels = [label_of(s, label_field, where) for s in images]
    n = len(images)
    return pa.table(
        {
            "split": pa.array([split_of_path(shard.url)] * n, pa.string()),
            "raw_label": _raw_label_array(labels, where),
            **pointer_columns(
                shard.url,
                list(range(n)),
                [s.image[0] for s in images],
                [s.image[1] for s in images],
                [s.image[2] for s in images],
            ),
        }
    )


def index_shard(shard: SourceShard, label_field: str = DEFAULT_LABEL_FIELD) -> ShardIndex:
    """One row per sample of one tar shard: split, raw label and the image member's bytes."""
    fs, path = fsspec.core.url_to_fs(shard.url)
    local = isinstance(fs, LocalFileSystem)
    # a local tar is read by seeking from header to header; a remote one in one stream
    options = {} if local else {"block_size": STREAM_BLOCK}
    with fs.open(path, "rb", **options) as handle:
        try:
            with tarfile.open(fileobj=handle, mode="r:" if local else "r|") as tar:
                samples = _scan(tar, shard)
        except (tarfile.TarError, EOFError) as error:
            raise UnreadableShardError(f"not a readable uncompressed tar ({error})") from None
    return ShardIndex(shard, samples_table(samples, shard, label_field))


def list_webdataset(pattern: str) -> list[SourceShard]:
    """The tar shards of ``pattern``: brace pattern, glob, folder or file; local or fsspec URL."""
    return list_shards(pattern, SUFFIXES, "webdataset")
