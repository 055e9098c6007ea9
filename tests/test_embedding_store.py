"""The embedding store is checked like a stage output: damage is found, dropped, re-embedded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from flows.config import RunConfig
from flows.verify_cmd import verify_root
from storage.embedding_store import EmbeddingStore, store_location
from storage.fs import Location
from storage.manifest import MANIFEST_NAME, read_manifest
from storage.schemas.images import IMAGES
from storage.tables import read_shards, shard_name, write_parquet
from tasks.algorithms.delta import content_hashes
from tasks.core.params import EmbeddingsParams
from tasks.embeddings import build_extractor, extract_shards
from tasks.sources.synthetic import make_synthetic


class _Progress:
    """Progress stand-in: counts nothing."""

    def start_at(self, done: int) -> None:
        pass

    def __call__(self, n: int) -> None:
        pass


def flip(path: Path, offset: int) -> None:
    """Invert 16 bytes at ``offset``, keeping the size and the modification time."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[offset : offset + 16] = bytes(b ^ 0xFF for b in data[offset : offset + 16])
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def two_files(folder: Path) -> tuple[EmbeddingStore, list[str], list[str]]:
    """A store with two files of three embeddings each; their hashes."""
    store = EmbeddingStore.open(Location(str(folder)))
    first, second = content_hashes([b"a", b"b", b"c"]), content_hashes([b"d", b"e", b"f"])
    store.add(first, np.eye(3, 4, dtype=np.float32))
    store.add(second, np.eye(3, 4, k=1, dtype=np.float32))
    return store, first, second


def test_a_store_file_damaged_in_place_is_dropped_with_one_warning(tmp_path: Path) -> None:
    store, first, second = two_files(tmp_path / "store")
    damaged = store.index[first[0]][0]
    path = tmp_path / "store" / damaged
    flip(path, path.stat().st_size // 3)  # same size, same time: only the content tells

    warnings: list[str] = []
    reopened = EmbeddingStore.open(store.location, warnings.append)
    assert len(warnings) == 1 and str(path) in warnings[0]
    assert "changed content" in warnings[0]
    assert not any(h in reopened for h in first) and all(h in reopened for h in second)
    assert not path.exists()
    manifest = read_manifest(store.location)
    assert manifest is not None and damaged not in manifest.files
    assert EmbeddingStore.open(store.location, warnings.append) and len(warnings) == 1


def test_a_truncated_store_file_is_dropped_naming_it(tmp_path: Path) -> None:
    store, first, second = two_files(tmp_path / "store")
    path = tmp_path / "store" / store.index[second[0]][0]
    path.write_bytes(path.read_bytes()[:-20])
    warnings: list[str] = []
    reopened = EmbeddingStore.open(store.location, warnings.append)
    assert len(warnings) == 1 and str(path) in warnings[0] and "changed size" in warnings[0]
    assert len(reopened) == 3 and all(h in reopened for h in first)


def test_files_a_killed_writer_left_are_removed(tmp_path: Path) -> None:
    store, _, _ = two_files(tmp_path / "store")
    (tmp_path / "store" / "vectors-abc.parquet.tmp-0123abcd").write_bytes(b"half")
    (tmp_path / "store" / "vectors-unlisted.parquet").write_bytes(b"renamed, never listed")
    EmbeddingStore.open(store.location)
    names = sorted(p.name for p in (tmp_path / "store").iterdir() if p.name != ".store.lock")
    assert names == [MANIFEST_NAME, *sorted(store.files)]


def _synthetic_images(location: Location, shards: int) -> Location:
    chunks = make_synthetic(0).chunks(30)
    for index in range(shards):
        write_parquet(location, shard_name(index), next(chunks), IMAGES)
    return location


def test_a_rerun_over_a_damaged_store_embeds_its_images_again(tmp_path: Path) -> None:
    config = RunConfig(dataset="synthetic", out=str(tmp_path), batch_size=16, image_size=16)
    extractor = build_extractor(config.params_of(EmbeddingsParams))
    images = _synthetic_images(Location(str(tmp_path / "images")), shards=2)
    reference = Location(str(tmp_path / "reference"))
    extract_shards(extractor, images, reference, _Progress())  # no store: everything embedded

    store = EmbeddingStore.open(store_location(str(tmp_path / "out"), "model"))
    target = Location(str(tmp_path / "emb"))
    extract_shards(extractor, images, target, _Progress(), store=store)
    assert read_shards(target).equals(read_shards(reference))
    for name in store.files:  # every vector of the store changed, the files kept their size
        path = Path(store.location.file(name))
        flip(path, path.stat().st_size // 2)
    (tmp_path / "emb" / shard_name(1)).unlink()

    warnings: list[str] = []
    again = EmbeddingStore.open(store.location, warnings.append)
    assert len(warnings) == len(store.files) and len(again) == 0
    extract_shards(extractor, images, target, _Progress(), store=again)
    assert read_shards(target).equals(read_shards(reference))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_verify_covers_the_store(tmp_path: Path, damage: str) -> None:
    out = tmp_path / "out"
    store, first, _ = two_files(out / "embedding_store" / "model")
    lines: list[str] = []
    assert verify_root(str(out), lines.append) == 0
    path = Path(store.location.file(store.index[first[0]][0]))
    if damage == "flip":
        flip(path, path.stat().st_size // 3)
    else:
        path.write_bytes(path.read_bytes()[:-20])
    lines.clear()
    assert verify_root(str(out), lines.append) == 1
    assert lines[0].startswith(f"damaged: {path} (")
