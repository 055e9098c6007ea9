"""kNN over all embeddings: exact against brute force, streamed shards, approximate recall; the
neighbours stage in flows: planted defects found and counted per pair, an image folder's copies."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from PIL import Image
from prefect import flow

from flows.config import RunConfig
from flows.overlap_flow import class_overlap
from storage import registry
from storage.manifest import StageManifest
from tasks.algorithms import neighbours as nb
from tasks.embeddings import embeddings_task
from tasks.images import images_task
from tasks.neighbours import neighbours_task


def _unit(rows: int, dim: int, seed: int, clusters: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, dim)).astype(np.float32)
    if clusters:
        x += 2 * rng.normal(size=(clusters, dim)).astype(np.float32)[np.arange(rows) % clusters]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reader(x: np.ndarray, shard: int) -> nb.ShardReader:
    return lambda: (x[i : i + shard] for i in range(0, len(x), shard))


def _brute(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = x.astype(np.float64) @ x.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def test_exact_knn_matches_brute_force_and_leaves_out_each_row_itself() -> None:
    x = _unit(300, 24, seed=0)
    found = nb.knn(_reader(x, 64), len(x), 24, k=5, gpu=False)
    positions, cosine = _brute(x, 5)
    assert found.kind == "flat" and found.recall == 1.0
    np.testing.assert_array_equal(found.neighbours.queries, np.arange(300))
    np.testing.assert_array_equal(found.neighbours.positions, positions)
    np.testing.assert_allclose(found.neighbours.cosine, cosine, atol=1e-5)
    assert not (found.neighbours.positions == np.arange(300)[:, None]).any()


def test_exact_copies_find_each_other_not_themselves() -> None:
    x = _unit(100, 16, seed=1)
    x[50] = x[7]  # a tie with the query itself: the copy must stay, the row itself must go
    found = nb.knn(_reader(x, 30), len(x), 16, k=3, gpu=False).neighbours
    assert found.positions[7, 0] == 50 and found.positions[50, 0] == 7
    assert found.cosine[7, 0] == pytest.approx(1.0, abs=1e-6)


def test_result_does_not_depend_on_the_shard_size() -> None:
    x = _unit(257, 8, seed=2)
    one = nb.knn(_reader(x, 257), len(x), 8, k=4, gpu=False).neighbours
    many = nb.knn(_reader(x, 10), len(x), 8, k=4, gpu=False).neighbours
    np.testing.assert_array_equal(one.positions, many.positions)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_recall_exact_neighbours(kind: nb.IndexKind) -> None:
    x = _unit(4000, 32, seed=3, clusters=20)
    read = _reader(x, 1000)
    approximate = nb.knn(read, len(x), 32, k=10, gpu=False, kind=kind, recall_sample=4000)
    exact = nb.knn(read, len(x), 32, k=10, gpu=False).neighbours
    truth = nb.recall(approximate.neighbours, exact)
    assert truth >= 0.95
    # With the whole set as the sample, the logged recall is the true one.
    assert approximate.recall == pytest.approx(truth)


def test_sampled_recall_is_measured_against_streamed_exact_search() -> None:
    x = _unit(500, 16, seed=4)
    read = _reader(x, 64)
    exact = nb.knn(read, len(x), 16, k=5, gpu=False).neighbours
    assert nb.sample_recall(exact, read, 5, size=100) == 1.0
    # Damage half of the rows' neighbour lists: recall falls to about 1 - 0.5 * 2/5.
    damaged = exact.positions.copy()
    damaged[::2, :2] = -1
    broken = nb.Neighbours(exact.queries, damaged, exact.cosine)
    assert nb.recall(broken, exact) == pytest.approx(0.8)
    assert 0.7 < nb.sample_recall(broken, read, 5, size=200) < 0.9


def test_size_and_device_choose_the_index() -> None:
    assert nb.choose_index(1000, gpu=False) == "flat"
    assert nb.choose_index(nb.EXACT_MAX_ROWS + 1, gpu=False) == "ivf"
    assert nb.choose_index(10**7, gpu=True) == "flat"
    x = _unit(600, 16, seed=5, clusters=6)
    found = nb.knn(_reader(x, 100), len(x), 16, k=5, gpu=False, exact_max_rows=500)
    assert found.kind == "ivf" and 0.9 <= found.recall <= 1.0


def test_bad_k_and_wrong_row_counts_fail_before_the_search() -> None:
    x = _unit(20, 4, seed=6)
    with pytest.raises(ValueError, match=r"k must lie in 1\.\.19"):
        nb.knn(_reader(x, 8), 20, 4, k=20, gpu=False)
    with pytest.raises(ValueError, match="shards hold 20 rows, the manifest says 25"):
        nb.knn(_reader(x, 8), 25, 4, k=3, gpu=False)


def test_ivf_training_sample_spans_every_shard_of_a_class_sorted_dataset() -> None:
    # Sorted by class, like an image folder: the first shard holds only the first classes.
    x = _unit(4000, 32, seed=7, clusters=20)
    x = x[np.argsort(np.arange(4000) % 20, kind="stable")]
    read = _reader(x, 500)
    sample = nb._stride_sample(read, 4000, 400)
    assert len(sample) == 400
    np.testing.assert_array_equal(sample, x[::10])
    found = nb.knn(read, len(x), 32, k=10, gpu=False, kind="ivf", recall_sample=500)
    assert found.recall >= 0.95


# --- the stage in flows ---


@pytest.fixture(scope="module")
def defects_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, dict]:
    """The synthetic flow with planted defects, once for the tests below."""
    out = tmp_path_factory.mktemp("defects") / "out"
    config = RunConfig(dataset="synthetic", synthetic_defects=True, out=str(out))
    return config, class_overlap(config)


def _stage_dir(record: dict, stage: str) -> Path:
    return Path(record["stages"][stage]["url"])


def _planted(record: dict) -> dict:
    manifest = json.loads((_stage_dir(record, "images") / "_manifest.json").read_text())
    return manifest["info"]["planted_defects"]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_a_run_finds_the_planted_defects_back(defects_run) -> None:
    _config, record = defects_run
    folder = _stage_dir(record, "neighbours")
    info = json.loads((folder / "_manifest.json").read_text())["info"]
    for table in ("near_duplicates", "label_suspects"):
        assert info["planted"][table]["precision"] >= 0.95, info["planted"]
        assert info["planted"][table]["recall"] >= 0.95, info["planted"]
    pairs = pl.read_parquet(folder / "near_duplicates.parquet")
    kinds = duckdb.sql(f"select kind, count(*) from '{folder}/near_duplicates.parquet' group by 1")
    assert dict(kinds.fetchall()) == info["duplicates"]
    assert pairs.height == sum(info["duplicates"].values())
    knn = pq.read_table(folder / "neighbours.parquet")
    assert knn.num_rows == 1200 + 3 * 8 and info["index"] == "flat" and info["recall_at_k"] == 1
    leaks = [copy for _, copy, kind, _ in _planted(record)["duplicates"] if kind != "same_class"]
    # Only the train_test_leak copies went to test; cross-class copies stayed in train.
    test_copies = pl.read_parquet(_stage_dir(record, "images") / "*.parquet").filter(
        pl.col("sample_id").is_in(leaks) & (pl.col("split") == "test")
    )
    assert info["leaked_test_images"] == test_copies.height == 8


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_overlap_and_confusion_pairs_count_the_leaks_of_their_classes(defects_run) -> None:
    _config, record = defects_run
    images = pl.read_parquet(_stage_dir(record, "images") / "*.parquet").select(
        "sample_id", "label"
    )
    label = dict(images.iter_rows())
    leaked = [
        label[c] for _, c, kind, _ in _planted(record)["duplicates"] if kind == "train_test_leak"
    ]
    overlap = pl.read_parquet(_stage_dir(record, "overlap") / "overlap_pairs.parquet")
    assert overlap.height > 0
    for row in overlap.iter_rows(named=True):
        assert row["leaked_test"] == leaked.count(row["label_a"]) + leaked.count(row["label_b"])
        # The plants avoid the look-alike pairs: no duplicate or flip between them.
        assert (
            row["cross_class_duplicates"] == row["suspects_a_to_b"] == row["suspects_b_to_a"] == 0
        )
    assert leaked  # the plants include train -> test copies
    suspects = pl.read_parquet(_stage_dir(record, "neighbours") / "label_suspects.parquet")
    votes = Counter(zip(suspects["label"], suspects["majority_label"], strict=True))
    confusion = pl.read_parquet(_stage_dir(record, "confusion") / "confusion_pairs.parquet")
    assert confusion.height > 0
    subset = json.loads((_stage_dir(record, "subset") / "_manifest.json").read_text())
    original = subset["info"]["original_labels"]
    for row in confusion.iter_rows(named=True):
        a, b = original[row["true_label"]], original[row["pred_label"]]
        assert row["leaked_test"] == leaked.count(a) + leaked.count(b)
        assert row["suspects_true_to_pred"] == votes[(a, b)]  # labelled a, neighbours vote b


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_the_report_shows_what_is_inside_each_overlap(defects_run) -> None:
    _config, record = defects_run
    report = (_stage_dir(record, "report") / "report.md").read_text()
    assert "Inside each overlap: duplicates, leaks and label suspects" in report
    assert "test images with a near-copy in train | 8 of 248" in report
    assert "inside-01-" in report  # a flagged pair's image grid


@flow(name="neighbours-only")
def neighbours_only(config: RunConfig) -> tuple[StageManifest, StageManifest]:
    """Load, embed, neighbours: the stage and what it needs; the images and stage manifests."""
    images = images_task(config.params.images)
    embeddings = embeddings_task(images, config.params.embeddings)
    return images, neighbours_task(images, embeddings, config.params.neighbours)


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_an_image_folder_file_under_two_classes_and_both_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for split, count in (("train", 12), ("test", 4)):
        for name in ("cat", "dog"):
            for i in range(count):
                _save(root / split / name / f"{i}.png", rng.integers(0, 256, (32, 32, 3), np.uint8))
    repeated = rng.integers(0, 256, (32, 32, 3), np.uint8)
    for where in ("train/cat", "train/dog", "test/cat"):
        _save(root / where / "same.png", repeated)
    config = RunConfig(
        dataset=f"imagefolder:{root}",
        out=str(tmp_path / "out"),
        model="vit_tiny_patch16_224",
        image_size=64,
        pretrained=False,
    )
    images, manifest = neighbours_only(config)
    pairs = registry.table("near_duplicates").read(manifest.location).to_pylist()
    rows = registry.table("images").read(images.location, ["sample_id", "image"]).to_pylist()
    path = {row["sample_id"]: row["image"]["path"] for row in rows}
    reported = {(path[r["sample_id_a"]], path[r["sample_id_b"]], r["kind"]) for r in pairs}
    assert reported == {
        ("train/cat/same.png", "train/dog/same.png", "cross_class"),
        ("train/cat/same.png", "test/cat/same.png", "train_test_leak"),
        ("train/dog/same.png", "test/cat/same.png", "cross_class"),
    }
    assert manifest.info["leaked_test_images"] == 1 and manifest.info["test_images"] == 9


def test_the_cpu_exact_search_equals_faiss_exact_whichever_runs_it() -> None:
    x = _unit(900, 32, seed=7, clusters=9)
    flat = nb.knn(_reader(x, 250), len(x), 32, k=6, gpu=False, kind="flat")
    faiss_flat = nb.knn(_reader(x, 250), len(x), 32, k=6, gpu=False, kind="faiss-flat")
    assert flat.recall == faiss_flat.recall == 1.0
    np.testing.assert_array_equal(flat.neighbours.positions, faiss_flat.neighbours.positions)
    np.testing.assert_allclose(flat.neighbours.cosine, faiss_flat.neighbours.cosine, atol=1e-5)


def test_where_exact_search_runs_in_torch_it_stays_exact_to_a_larger_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = _unit(300, 8, seed=8, clusters=3)
    monkeypatch.setattr(nb, "EXACT_MAX_ROWS", 100)
    monkeypatch.setattr(nb, "EXACT_MAX_ROWS_BF16", 1000)
    for in_torch, kind in ((True, "flat"), (False, "ivf")):
        monkeypatch.setattr(nb, "torch_exact", lambda gpu, answer=in_torch: answer)
        assert nb.knn(_reader(x, 100), len(x), 8, k=4, gpu=False).kind == kind
