"""Re-runs embed only what is new: content-addressed embeddings reused across images versions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from prefect.logging import disable_run_logger

from flows.config import RunConfig
from storage.embedding_store import EmbeddingStore
from storage.fs import Location
from storage.manifest import StageManifest
from storage.schemas.images import IMAGES
from storage.tables import read_parquet, read_shards, shard_name, write_parquet
from tasks.algorithms.delta import FileStat, assemble, content_hashes, folder_delta, unseen
from tasks.core.results import RunStages
from tasks.embeddings import embeddings_task
from tasks.images import images_task
from tasks.models.embedding_shards import extract_shards
from tasks.models.extractor import build_extractor
from tasks.models.reuse import Reuse
from tasks.record import record_task
from tasks.sources import imagefolder as imagefolder_source
from tasks.sources.imagefolder import read_image_file
from tasks.sources.synthetic import make_synthetic

CLASSES = ("apple", "bear", "cloud")


def _write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _folder(root: Path, per_class: int = 6) -> Path:
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            _write_png(root / name / f"{i:03d}.png", seed=100 * c + i)
    return root


def _config(folder: Path, out: Path) -> RunConfig:
    return RunConfig(
        dataset=f"imagefolder:{folder}",
        out=str(out),
        model="vit_tiny_patch16_224",
        pretrained=False,
        image_size=16,
        shard_size=5,
        batch_size=4,
        device="cpu",
    )


def _extract(folder: Path, out: Path) -> tuple[StageManifest, StageManifest]:
    """The load and extraction stages over ``folder``, writing under ``out``."""
    config = _config(folder, out)
    with disable_run_logger():
        images = images_task.fn(config.params.images)
        return images, embeddings_task.fn(images, config.params.embeddings)


def _table(manifest: StageManifest) -> pa.Table:
    return read_shards(manifest.location)


def test_unseen_picks_first_occurrence_of_each_unknown_hash() -> None:
    assert unseen(["a", "b", "a", "c", "b"], {"b"}) == [0, 3]


def test_assemble_orders_vectors_by_hash() -> None:
    vectors = {"x": np.ones(2, np.float32), "y": np.zeros(2, np.float32)}
    assert assemble(["y", "x", "y"], vectors, 2).tolist() == [[0, 0], [1, 1], [0, 0]]


def test_store_round_trips_and_sees_files_of_other_processes(tmp_path: Path) -> None:
    location = Location(str(tmp_path / "store"))
    writer, reader = EmbeddingStore.open(location), EmbeddingStore.open(location)
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    writer.add(content_hashes([b"a", b"b", b"c"]), vectors)
    assert len(reader) == 0
    reader.refresh()
    got = reader.vectors(content_hashes([b"c", b"a"]))
    assert [got[h].tolist() for h in content_hashes([b"c", b"a"])] == [[4, 5], [0, 1]]


def _grow_shrink_relabel(folder: Path) -> None:
    """Add 4 images, remove 2, move 2 to another class (relabel) and rename 1."""
    for i in range(4):
        _write_png(folder / "bear" / f"new{i}.png", seed=900 + i)
    (folder / "apple" / "000.png").unlink()
    (folder / "cloud" / "005.png").unlink()
    shutil.move(folder / "apple" / "001.png", folder / "cloud" / "from-apple.png")
    shutil.move(folder / "bear" / "002.png", folder / "apple" / "from-bear.png")
    shutil.move(folder / "cloud" / "001.png", folder / "cloud" / "renamed.png")


@pytest.mark.usefixtures("prefect_server")
def test_rerun_embeds_only_new_images_and_equals_a_from_scratch_run(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "folder")
    out = tmp_path / "out"
    _, first = _extract(folder, out)
    assert (first.info["embedded"], first.info["reused"]) == (18, 0)

    _grow_shrink_relabel(folder)
    images, second = _extract(folder, out)
    images_params = _config(folder, out).params.images
    assert images.info["rows"] == 20
    assert (second.info["embedded"], second.info["reused"]) == (4, 16)

    _, scratch = _extract(folder, tmp_path / "scratch")
    assert (scratch.info["embedded"], scratch.info["reused"]) == (20, 0)
    assert _table(second).equals(_table(scratch))  # same rows, labels, ids and values
    moved = _table(second).filter(pa.compute.equal(_table(second).column("class_name"), "cloud"))
    assert moved.num_rows == 6  # 6 - 1 removed + 1 relabelled in

    with disable_run_logger():
        record = record_task.fn(RunStages(images, second), {}, images_params)
    expected = {"new": 7, "changed": 0, "removed": 5, "unchanged": 13}
    expected |= {"embedded": 4, "reused": 16, "cached": 0}
    assert record.changes == expected  # 4 added, 3 moved in; 2 removed, 3 moved away
    assert json.loads((out / "latest.json").read_text())["changes"] == expected


@pytest.mark.usefixtures("prefect_server")
def test_relabelling_only_embeds_nothing_again(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "folder")
    out = tmp_path / "out"
    _extract(folder, out)
    shutil.move(folder / "bear" / "003.png", folder / "apple" / "was-bear.png")
    _, again = _extract(folder, out)
    assert (again.info["embedded"], again.info["reused"]) == (0, 18)


class _Killed:
    """Progress stand-in that kills the run at its ``after``-th call (a crash mid-shard)."""

    def __init__(self, after: int | None = None) -> None:
        self.calls, self.after = 0, after

    def start_at(self, done: int) -> None:
        pass

    def __call__(self, n: int) -> None:
        self.calls += 1
        if self.after is not None and self.calls >= self.after:
            raise KeyboardInterrupt("killed mid-shard")


def _synthetic_images(location: Location, shards: int) -> Location:
    chunks = make_synthetic(0).chunks(40)
    for index in range(shards):
        write_parquet(location, shard_name(index), next(chunks), IMAGES)
    return location


def test_a_run_killed_in_the_delta_resumes_with_nothing_lost_or_embedded_twice(
    tmp_path: Path,
) -> None:
    config = RunConfig(dataset="synthetic", out=str(tmp_path), batch_size=16, image_size=16)
    extractor = build_extractor(config.params.embeddings)
    reference = Location(str(tmp_path / "reference"))
    grown = _synthetic_images(Location(str(tmp_path / "images")), shards=3)
    extract_shards(extractor, grown, reference, _Killed())  # no store: everything embedded

    store = EmbeddingStore.open(Location(str(tmp_path / "store")))
    old = _synthetic_images(Location(str(tmp_path / "old")), shards=1)
    extract_shards(extractor, old, Location(str(tmp_path / "old-emb")), _Killed(), store=store)

    target = Location(str(tmp_path / "emb"))
    with pytest.raises(KeyboardInterrupt):  # shard 0 reused (1 call), killed in shard 1's 2nd batch
        extract_shards(extractor, grown, target, _Killed(after=3), store=store)
    resumed = Reuse()
    extract_shards(extractor, grown, target, _Killed(), store=store, tally=resumed)
    assert (resumed.embedded, resumed.reused) == (80, 0)  # shard 0 was finished before the kill
    assert read_shards(target).equals(read_shards(reference))
    files = EmbeddingStore.open(store.location)
    hashes = [
        h for name in files.files for h in read_parquet(store.location, name).column(0).to_pylist()
    ]
    assert len(hashes) == len(set(hashes)) == 120  # each image embedded and stored once


def test_folder_delta_sorts_files_by_what_happened_to_them() -> None:
    current = [FileStat("a", 1, 1), FileStat("b", 2, 5), FileStat("d", 4, 4)]
    delta = folder_delta(current, {"a": (1, 1), "b": (2, 2), "c": (3, 3)})
    assert (delta.new, delta.changed, delta.removed, delta.unchanged) == (
        ["d"],
        ["b"],
        ["c"],
        ["a"],
    )


def _load(folder: Path, out: Path, **overrides: object) -> StageManifest:
    config = _config(folder, out).model_copy(update=overrides)
    with disable_run_logger():
        return images_task.fn(config.params.images)


@pytest.mark.usefixtures("prefect_server")
def test_a_reload_reads_only_new_and_changed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path / "folder")
    out = tmp_path / "out"
    assert _load(folder, out).info["files"]["new"] == 18
    _write_png(folder / "bear" / "new.png", seed=999)
    _write_png(folder / "apple" / "002.png", seed=998)  # same path, new content
    (folder / "cloud" / "003.png").unlink()

    read: list[Path] = []

    def counting(path: Path, **options: int | None) -> bytes | None:
        read.append(path)
        return read_image_file(path, **options)

    monkeypatch.setattr(imagefolder_source, "read_image_file", counting)
    again = _load(folder, out)
    assert again.info["files"] == {"new": 1, "changed": 1, "removed": 1, "unchanged": 16}
    assert sorted(p.name for p in read) == ["002.png", "new.png"]

    read.clear()
    rescanned = _load(folder, out, rescan=True)
    assert len(read) == 18 and rescanned.info["files"]["new"] == 18
    assert _table(again).equals(_table(rescanned))  # same rows and bytes as a full re-read
