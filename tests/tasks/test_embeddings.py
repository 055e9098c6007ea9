"""Extraction: tiny random-init timm models, tensor preprocessing, shards, resume, bad models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from flows.config import RunConfig
from storage.fs import Location
from storage.schemas.images import IMAGES, embeddings_schema
from storage.tables import read_shards, shard_name, write_parquet
from tasks.models import models
from tasks.models.embed import Extractor, preprocess, stack_uint8
from tasks.models.embedding_shards import extract_shards
from tasks.models.extractor import build_extractor, weights_fingerprint
from tasks.sources.synthetic import make_synthetic

TINY = "vit_tiny_patch16_224"


class Counter:
    """Stands in for the progress bar; can stop the run after some batches (a crash)."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.done, self.computed, self.calls, self.crash_after = 0, 0, 0, crash_after

    def start_at(self, done: int) -> None:
        self.done = done

    def __call__(self, n: int) -> None:
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise KeyboardInterrupt("killed mid-shard")
        self.done += n
        self.computed += n


def _config(tmp_path: Path, **overrides) -> RunConfig:
    values = {"dataset": "synthetic", "out": str(tmp_path), "batch_size": 16, "precision": "fp32"}
    return RunConfig(**{**values, **overrides})


def _images(tmp_path: Path, rows_per_shard: int = 40, shards: int = 3) -> Location:
    location = Location(str(tmp_path / "images"))
    chunks = make_synthetic(0).chunks(rows_per_shard)
    for index in range(shards):
        write_parquet(location, shard_name(index), next(chunks), IMAGES)
    return location


def test_extractor_gives_normalised_float32_rows_per_image(tmp_path: Path) -> None:
    extractor = build_extractor(_config(tmp_path))
    images = torch.from_numpy(make_synthetic(0).images[:10]).permute(0, 3, 1, 2)
    vectors = extractor.embed_arrays(images)
    assert vectors.shape == (10, 192) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert extractor.prep.image_size == 64  # the synthetic demo's input size, from the model


def test_preprocess_resizes_and_normalises_as_a_batch() -> None:
    prep = models.Preprocessing(224, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    white = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    x = preprocess(white, prep, torch.float32)
    assert x.shape == (2, 3, 224, 224)
    torch.testing.assert_close(x, torch.ones_like(x))


def test_images_of_different_sizes_are_stacked_at_the_model_size() -> None:
    images = [np.zeros((20, 30, 3), np.uint8), np.full((50, 40, 3), 255, np.uint8)]
    batch = stack_uint8(images, 64)
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.uint8
    assert batch[1].min() == 255


def test_a_cpu_forward_takes_at_most_32_images_and_keeps_the_order(tmp_path: Path) -> None:
    images = torch.from_numpy(make_synthetic(0).images[:70]).permute(0, 3, 1, 2)
    extractor = build_extractor(_config(tmp_path, batch_size=64))
    one_by_one = np.concatenate([extractor.embed_uint8(image[None]) for image in images])
    seen: list[int] = []
    extractor.model.register_forward_pre_hook(lambda _, args: seen.append(len(args[0])))
    batched = extractor.embed_arrays(images)
    assert seen == [32, 32, 6]  # batches of 64 and 6, the first split in two
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_a_bf16_embedding_does_not_depend_on_how_many_images_shared_its_pass(
    tmp_path: Path,
) -> None:
    # oneDNN (AMX) and cuBLAS pick kernels by the number of rows, and bf16 rounds differently in
    # each: a shard's last few images, or a resumed run's, must still get the same vectors.
    images = torch.from_numpy(make_synthetic(0).images[:40]).permute(0, 3, 1, 2)
    extractor = build_extractor(_config(tmp_path, batch_size=32, precision="bf16"))
    seen: list[int] = []
    extractor.model.register_forward_pre_hook(lambda _, args: seen.append(len(args[0])))
    together = extractor.embed_arrays(images)
    assert seen == [32, 32]  # the last 8 padded to a full pass
    one_by_one = np.concatenate([extractor.embed_uint8(image[None]) for image in images])
    in_threes = np.concatenate([extractor.embed_uint8(images[i : i + 3]) for i in range(0, 40, 3)])
    np.testing.assert_array_equal(together, one_by_one)
    np.testing.assert_array_equal(together, in_threes)


def test_bf16_embeddings_agree_with_fp32(tmp_path: Path) -> None:
    images = torch.from_numpy(make_synthetic(0).images[:8]).permute(0, 3, 1, 2)
    fp32 = build_extractor(_config(tmp_path)).embed_arrays(images)
    bf16 = build_extractor(_config(tmp_path, precision="bf16")).embed_arrays(images)
    assert np.min(np.sum(fp32 * bf16, axis=1)) > 0.99


def test_extract_shards_writes_one_shard_per_images_shard(tmp_path: Path) -> None:
    images = _images(tmp_path)
    target = Location(str(tmp_path / "emb"))
    rows = extract_shards(build_extractor(_config(tmp_path)), images, target, Counter())
    assert rows == {shard_name(i): 40 for i in range(3)}
    table = read_shards(target)
    assert table.schema.equals(embeddings_schema(192))
    assert table.column("sample_id").to_pylist() == list(range(120))
    assert table.column("label").equals(read_shards(images).column("label"))


def test_a_killed_extraction_resumes_at_the_missing_shard_with_identical_values(
    tmp_path: Path,
) -> None:
    images = _images(tmp_path)
    extractor = build_extractor(_config(tmp_path))
    reference = Location(str(tmp_path / "reference"))
    extract_shards(extractor, images, reference, Counter())

    target = Location(str(tmp_path / "emb"))
    with pytest.raises(KeyboardInterrupt):  # killed in the 2nd shard (batches of 16: 3 a shard)
        extract_shards(extractor, images, target, Counter(crash_after=4))
    assert target.listdir() == [shard_name(0)]

    resumed = Counter()
    extract_shards(extractor, images, target, resumed)
    assert resumed.computed == 80  # only the two missing shards were computed
    assert resumed.done == 120  # the progress counts the finished shard as done
    assert read_shards(target).equals(read_shards(reference))


def test_a_truncated_shard_is_recomputed(tmp_path: Path) -> None:
    images = _images(tmp_path, shards=2)
    extractor = build_extractor(_config(tmp_path))
    target = Location(str(tmp_path / "emb"))
    extract_shards(extractor, images, target, Counter())
    path = tmp_path / "emb" / shard_name(1)
    path.write_bytes(path.read_bytes()[:100])
    again = Counter()
    extract_shards(extractor, images, target, again)
    assert again.computed == 40 and read_shards(target).num_rows == 80


def test_unknown_model_names_close_matches() -> None:
    with pytest.raises(
        models.ModelError, match=r"unknown timm model 'vit_smal_patch16_224.*Did you mean"
    ):
        models.check_model_name("vit_smal_patch16_224")


def test_unknown_pretrained_tag_lists_the_real_tags() -> None:
    with pytest.raises(models.ModelError, match=r"unknown pretrained tag 'foo'.*\.dino"):
        models.check_model_name("vit_small_patch16_224.foo")
    models.check_model_name("vit_small_patch16_224.dino")  # a real tag passes


def test_local_weights_file_loads_and_gives_the_same_model(tmp_path: Path) -> None:
    reference = timm.create_model(TINY, pretrained=False, num_classes=0, img_size=64)
    path = tmp_path / "tiny.pth"
    torch.save(reference.state_dict(), path)
    loaded = models.build_model(TINY, pretrained=True, weights=path, image_size=64)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x), reference.eval()(x))


def test_weights_of_another_model_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "small.pth"
    small = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    torch.save(small.state_dict(), path)
    with pytest.raises(models.ModelError, match=f"does not fit model {TINY}") as error:
        models.build_model(TINY, pretrained=True, weights=path)
    assert "\n" not in str(error.value)


def test_no_network_for_pretrained_weights_says_what_to_do() -> None:
    with pytest.raises(
        models.ModelError, match="no network\\? use --weights PATH, or --no-pretrained"
    ):
        models.build_model("vit_small_patch16_224.dino", pretrained=True)


def test_cuda_without_a_gpu_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(models.ModelError, match="no CUDA device"):
        models.resolve_device("cuda")
    assert models.resolve_device("auto").type == "cpu"


def test_dinov2_runs_at_224_when_asked(tmp_path: Path) -> None:
    model = models.build_model("vit_small_patch14_dinov2", pretrained=False, image_size=224)
    assert models.preprocessing_of(model).image_size == 224


def test_extractor_uses_the_declared_dimension(tmp_path: Path) -> None:
    extractor = build_extractor(_config(tmp_path))
    assert isinstance(extractor, Extractor) and extractor.dim == 192


def test_weights_fingerprint_follows_the_file_contents(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(b"first")
    first = weights_fingerprint(path)
    assert weights_fingerprint(path) == first
    path.write_bytes(b"second, longer")
    assert weights_fingerprint(path) != first
