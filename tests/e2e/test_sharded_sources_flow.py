"""The same images as an image folder, Hugging Face Parquet and WebDataset tars: equal results.

Each source runs the images, embeddings and class_similarity stages (a random-init tiny ViT)
on the threads runner and on a local Dask cluster of 2 workers, and the Parquet source also
from a bucket (moto S3). Embeddings are matched by the image bytes they were computed from,
since each source numbers its images in its own listing order.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect import flow

from flows import runners
from flows.config import RunConfig
from flows.overlap_flow import class_overlap
from storage import registry
from storage.fs import Location
from storage.manifest import StageManifest
from storage.tables import embedding_matrix
from tasks.class_similarity import class_similarity_task
from tasks.embeddings import embeddings as embeddings_stage
from tasks.images import images as images_stage
from tasks.sources import synthetic
from tasks.sources.sharded_load import image_bytes
from tests.support.flow_states import task_states
from tests.support.sharded_fixture import (
    hf_metadata,
    moto_s3,
    pictures,
    write_hf_parquet,
    write_imagefolder,
    write_tars,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
BUCKET = "sharded-sources"
DASK = importlib.util.find_spec("prefect_dask") is not None


@flow(name="sharded-sources-test")
def first_stages(config: RunConfig) -> dict[str, StageManifest]:
    """images -> embeddings -> class_similarity, spread over the cluster where there is one."""
    on_cluster = runners.on_cluster(config)
    images = images_stage(config.params.images, on_cluster=on_cluster)
    embeddings = embeddings_stage(images, config.params.embeddings, on_cluster=on_cluster)
    similarity = class_similarity_task(images, embeddings, config.params.class_similarity)
    return {"images": images, "embeddings": embeddings, "class_similarity": similarity}


def run(dataset: str, out: str, runner: str = "threads", **flags: Any) -> tuple[dict, dict]:
    """The three stages of ``dataset``; their manifests and each task's final state."""
    config = RunConfig(
        dataset=dataset,
        out=out,
        runner=runner,
        workers=2,
        model="vit_tiny_patch16_224",
        pretrained=False,
        image_size=32,
        batch_size=8,
        **flags,
    )
    state = runners.configured(first_stages, config)(config, return_state=True)
    return state.result(), task_states(state)


def by_image(stages: dict[str, StageManifest]) -> dict[str, tuple[str, str, np.ndarray]]:
    """sha256 of each image's bytes -> (split, class name, embedding)."""
    images = registry.table("images").read(stages["images"].location)
    embeddings = registry.table("embeddings").read(stages["embeddings"].location)
    assert images.column("sample_id").equals(embeddings.column("sample_id"))
    vectors = embedding_matrix(embeddings)
    keys = [hashlib.sha256(data).hexdigest() for data in image_bytes(images)]
    splits = images.column("split").to_pylist()
    names = images.column("class_name").to_pylist()
    return {k: (s, n, v) for k, s, n, v in zip(keys, splits, names, vectors, strict=True)}


def assert_same(stages: dict, baseline: dict) -> None:
    """Equal embeddings image by image, equal class similarity pair by pair."""
    ours, theirs = by_image(stages), by_image(baseline)
    assert ours.keys() == theirs.keys()
    for key, (split, name, vector) in ours.items():
        assert (split, name) == theirs[key][:2]
        np.testing.assert_allclose(vector, theirs[key][2], atol=1e-5)
    table = registry.table("class_similarity")
    a = table.read(stages["class_similarity"].location).sort_by(
        [("label_a", "ascending"), ("label_b", "ascending")]
    )
    b = table.read(baseline["class_similarity"].location).sort_by(
        [("label_a", "ascending"), ("label_b", "ascending")]
    )
    assert a.column("class_a").equals(b.column("class_a"))
    np.testing.assert_allclose(
        a.column("cosine").to_numpy(), b.column("cosine").to_numpy(), atol=1e-5
    )


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The same pictures in the three layouts."""
    root = tmp_path_factory.mktemp("sources")
    items = pictures(per_class=6, test_per_class=2)
    write_imagefolder(root / "folder", items)
    write_hf_parquet(root / "hf", items, files_per_split=2, row_group_size=4)
    write_tars(root / "wds", items, per_shard=5, label="name")
    return {
        "imagefolder": f"imagefolder:{root / 'folder'}",
        "parquet": f"parquet:{root / 'hf'}",
        "webdataset": f"webdataset:{root}/wds/{{train-{{000000..000003}},test-00000{{0,1}}}}.tar",
        "root": str(root),
    }


@pytest.fixture(scope="module")
def baseline(sources, tmp_path_factory) -> dict:
    stages, _ = run(sources["imagefolder"], str(tmp_path_factory.mktemp("folder")))
    return stages


def test_parquet_and_webdataset_on_threads_equal_the_image_folder(
    sources, baseline, tmp_path
) -> None:
    parquet, _ = run(sources["parquet"], str(tmp_path / "pq"))
    assert_same(parquet, baseline)
    assert parquet["images"].info["read_in_place"]
    wds, _ = run(sources["webdataset"], str(tmp_path / "wds"), label_field="name")
    assert_same(wds, baseline)


@pytest.mark.skipif(not DASK, reason="pip install '.[dask]'")
def test_on_a_2_worker_dask_cluster_too(sources, baseline, tmp_path) -> None:
    parquet, states = run(sources["parquet"], str(tmp_path / "pq"), runner="dask")
    assert len([n for n in states if n.startswith("index ")]) == 4, states  # one per file
    assert len([n for n in states if n.startswith("embed part-")]) == 4, states
    assert_same(parquet, baseline)
    wds, states = run(
        sources["webdataset"], str(tmp_path / "wds"), runner="dask", label_field="name"
    )
    assert len([n for n in states if n.startswith("index ")]) == 6, states
    assert_same(wds, baseline)


@pytest.fixture
def s3(monkeypatch) -> Iterator[str]:
    pytest.importorskip("s3fs")
    with moto_s3(monkeypatch, BUCKET) as endpoint:
        yield endpoint


def test_parquet_from_a_bucket_equals_the_image_folder(sources, baseline, s3) -> None:
    fs = fsspec.filesystem("s3")
    fs.put(str(Path(sources["root"]) / "hf" / "data"), f"{BUCKET}/hf/", recursive=True)
    stages, _ = run(f"parquet:s3://{BUCKET}/hf/data", f"s3://{BUCKET}/out")
    assert stages["images"].url.startswith(f"s3://{BUCKET}/out/")
    assert_same(stages, baseline)
    files = registry.table("images").read(stages["images"].location).column("source_file")
    assert pa.compute.all(pa.compute.starts_with(files, "s3://")).as_py()


def test_the_whole_flow_on_synthetic_data_as_parquet_finds_what_synthetic_finds(tmp_path) -> None:
    rows = next(synthetic.make_synthetic(0).chunks(10**6)).select(["image", "label", "split"])
    names = synthetic.make_synthetic(0).info.class_names
    rows = rows.replace_schema_metadata(hf_metadata(names))
    (tmp_path / "hf").mkdir()
    for index, start in enumerate((0, 700)):
        pq.write_table(rows.slice(start, 700), tmp_path / "hf" / f"part-{index}.parquet")
    # the synthetic run's model and input size, stated for both runs
    common = {
        "report_pairs": 0,
        "model": "vit_tiny_patch16_224",
        "pretrained": False,
        "image_size": 64,
    }
    dataset = f"parquet:{tmp_path / 'hf'}"
    parquet = class_overlap(RunConfig(dataset=dataset, out=str(tmp_path / "pq"), **common))
    baseline = class_overlap(RunConfig(dataset="synthetic", out=str(tmp_path / "syn"), **common))
    for stage, table, keys in (
        ("overlap", "overlap_pairs", ["class_a", "class_b"]),
        ("confusion", "confusion_pairs", ["True", "Pred", "flagged"]),
    ):
        ours = registry.table(table).read(Location(parquet["stages"][stage]["url"]), keys)
        theirs = registry.table(table).read(Location(baseline["stages"][stage]["url"]), keys)
        assert ours.equals(theirs), stage
    subset = registry.table("subset").read(Location(parquet["stages"]["subset"]["url"]))
    expected = registry.table("subset").read(Location(baseline["stages"]["subset"]["url"]))
    assert subset.num_rows == expected.num_rows > 0
    # the subset copies the flagged classes' images out of the source
    assert (
        subset.column("image")
        .combine_chunks()
        .field("bytes")
        .equals(expected.column("image").combine_chunks().field("bytes"))
    )
