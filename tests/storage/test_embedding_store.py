"""The embedding store is checked like a stage output: damage is found, dropped, re-embedded."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from prefect.logging import disable_run_logger

from flows.config import RunConfig
from flows.verify_cmd import verify_root
from storage.embedding_store import EmbeddingStore, store_location
from storage.fs import Location
from storage.manifest import MANIFEST_NAME, StageManifest, read_manifest
from storage.schemas.images import IMAGES
from storage.tables import read_parquet, read_shards, shard_name, write_parquet
from tasks.algorithms.delta import content_hashes
from tasks.core.results import RunStages
from tasks.embeddings import build_extractor, extract_shards
from tasks.models.reuse import Reuse
from tasks.record import record_task
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
    warnings: list[str] = []
    EmbeddingStore.open(store.location, warnings.append)
    assert len(warnings) == 1 and "removed 1 file(s)" in warnings[0]
    assert "vectors-unlisted.parquet" in warnings[0]
    names = sorted(p.name for p in (tmp_path / "store").iterdir() if p.name != ".store.lock")
    assert names == [MANIFEST_NAME, *sorted(store.files)]


def _synthetic_images(location: Location, shards: int) -> Location:
    chunks = make_synthetic(0).chunks(30)
    for index in range(shards):
        write_parquet(location, shard_name(index), next(chunks), IMAGES)
    return location


def test_a_rerun_over_a_damaged_store_embeds_its_images_again(tmp_path: Path) -> None:
    config = RunConfig(dataset="synthetic", out=str(tmp_path), batch_size=16, image_size=16)
    extractor = build_extractor(config.params.embeddings)
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


def test_concurrent_writers_never_store_one_content_twice(tmp_path: Path) -> None:
    location = Location(str(tmp_path / "store"))
    writers = [EmbeddingStore.open(location) for _ in range(4)]  # each saw an empty store
    hashes = content_hashes([bytes([i]) for i in range(40)])
    vectors = np.random.default_rng(0).random((40, 8), dtype=np.float32)
    spans = [(0, 20), (10, 30), (20, 40), (0, 40)]  # overlapping contents
    barrier = threading.Barrier(len(writers))

    def write(store: EmbeddingStore, span: tuple[int, int]) -> int:
        barrier.wait()
        return store.add(hashes[span[0] : span[1]], vectors[span[0] : span[1]])

    with ThreadPoolExecutor(len(writers)) as pool:
        stored = list(pool.map(write, writers, spans))
    assert sum(stored) == 40
    reader = EmbeddingStore.open(location)
    rows = [h for name in reader.files for h in read_parquet(location, name).column(0).to_pylist()]
    assert sorted(rows) == sorted(hashes)  # each content once
    got = reader.vectors(hashes)
    assert np.array_equal(np.stack([got[h] for h in hashes]), vectors)


class _Killed(_Progress):
    """Progress stand-in that kills the run at its ``after``-th call (a crash mid-shard)."""

    def __init__(self, after: int) -> None:
        self.calls, self.after = 0, after

    def __call__(self, n: int) -> None:
        self.calls += 1
        if self.calls >= self.after:
            raise KeyboardInterrupt("killed mid-shard")


def test_a_resumed_run_counts_what_it_did(tmp_path: Path) -> None:
    config = RunConfig(dataset="synthetic", out=str(tmp_path), batch_size=16, image_size=16)
    extractor = build_extractor(config.params.embeddings)
    images = _synthetic_images(Location(str(tmp_path / "images")), shards=3)
    store = EmbeddingStore.open(Location(str(tmp_path / "store")))
    target = Location(str(tmp_path / "emb"))
    with pytest.raises(KeyboardInterrupt):  # shard 0 written, shard 1 killed after its 1st batch
        extract_shards(extractor, images, target, _Killed(after=4), store=store)
    tally = Reuse()
    extract_shards(extractor, images, target, _Progress(), store=store, tally=tally)
    # shard 1's first batch was not stored (the store is written per shard): embedded again
    assert (tally.embedded, tally.reused, tally.cached) == (60, 0, 30)


def _manifest(stage: str, info: dict) -> StageManifest:
    return StageManifest(stage=stage, key="k", url="/nowhere", code_version="c", info=info)


@pytest.mark.parametrize(
    ("made_by", "counts"),
    [(None, {"embedded": 5, "reused": 3, "cached": 2}), ("an earlier run", {"cached": 10})],
)
def test_the_run_record_counts_this_runs_work(
    tmp_path: Path, made_by: str | None, counts: dict
) -> None:
    images = _manifest("images", {"rows": 10, "files": {"new": 1, "unchanged": 9}})
    info = {"rows": 10, "embedded": 5, "reused": 3, "cached": 2, "flow_run": made_by}
    params = RunConfig(dataset="synthetic", out=str(tmp_path)).params.common
    with disable_run_logger():  # outside a flow run: the current flow run is None
        record = record_task.fn(RunStages(images, _manifest("embeddings", info)), {}, params)
    expected = {"new": 1, "unchanged": 9, "embedded": 0, "reused": 0} | counts
    assert record.changes == expected
    assert json.loads((tmp_path / "latest.json").read_text())["changes"] == expected
