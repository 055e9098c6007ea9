"""The table of dataset kinds: every row parses, helps, opens and counts its classes as it says."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from storage.code_version import imports_of
from tasks.core import dataset_kinds
from tasks.core.dataset_kinds import KINDS, DatasetKind, kind_of
from tasks.core.params import ImagesParams, StageParams
from tasks.images import SOURCE_MODULES, check_dataset, open_source
from tasks.sources import idx, synthetic
from tasks.sources.sharded_load import ShardedSource


def _spelled(kind: DatasetKind) -> str:
    """A --dataset naming ``kind``: the name alone, or the prefix with some argument."""
    return kind.name if kind.built_in else f"{kind.name}:some/where"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_kind_parses_and_has_its_line_in_the_help(kind: DatasetKind) -> None:
    params = ImagesParams(dataset=_spelled(kind))
    assert kind_of(params.dataset) is kind
    assert kind.help and "\n" not in kind.help
    assert f"{kind.usage} ({kind.help})" in StageParams.model_fields["dataset"].description


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_max_per_class_is_taken_by_the_built_in_kinds_only(kind: DatasetKind) -> None:
    if kind.built_in:
        assert ImagesParams(dataset=kind.name, max_per_class=3).max_per_class == 3
        return
    with pytest.raises(ValidationError, match="built-in datasets only") as refused:
        ImagesParams(dataset=_spelled(kind), max_per_class=3)
    assert ", ".join(dataset_kinds.BUILT_IN) in str(refused.value)


@pytest.mark.parametrize("name", ["imagenet", "cifar1000", "mnist:x", "parquet", "imagefolder:"])
def test_an_unknown_name_is_refused_in_one_line_listing_the_table_s_kinds(name: str) -> None:
    with pytest.raises(ValidationError) as refused:
        StageParams(dataset=name)
    (error,) = refused.value.errors()
    message = error["msg"]
    assert "\n" not in message and repr(name) in message
    assert message.endswith("use one of " + ", ".join(kind.usage for kind in KINDS))


def test_a_kind_needs_a_plain_name() -> None:
    with pytest.raises(ValueError, match="lower-case letters"):
        DatasetKind("Tiny ImageNet", "a help line", None)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_each_kind_opens_through_its_row(kind: DatasetKind) -> None:
    """A row with a source names a module of the images stage (so its code version covers it)
    that can open it; a row without one is read in place by a sharded source."""
    params = ImagesParams(dataset=_spelled(kind))
    if kind.read_in_place:
        sharded = ShardedSource.of(params)
        assert sharded is not None and (sharded.kind, sharded.spec) == (kind.name, "some/where")
        return
    module = SOURCE_MODULES[kind.source]
    assert callable(module.open_dataset)
    assert module.__name__ in imports_of("tasks.images")[0]
    assert ShardedSource.of(params) is None


def test_the_class_counts_of_the_table_are_the_sources() -> None:
    counts = {kind.name: kind.num_classes for kind in KINDS if kind.built_in}
    made = open_source(ImagesParams(dataset="synthetic"))
    assert counts["synthetic"] == len(made.info.class_names) == synthetic.N_CLASSES
    for name, spec in idx.VARIANTS.items():
        assert counts[name] == len(spec.class_names)
    assert (counts["cifar10"], counts["cifar100"]) == (10, 100)
    assert check_dataset(ImagesParams(dataset="synthetic")) == synthetic.N_CLASSES
    assert all(kind.num_classes is None for kind in KINDS if not kind.built_in)


def test_an_image_folder_opens_at_its_path(tmp_path: Path) -> None:
    for shade, name in enumerate(("cat", "dog")):
        (tmp_path / "pets" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (shade * 200, 0, 0)).save(tmp_path / "pets" / name / "a.png")
    params = ImagesParams(dataset=f"imagefolder:{tmp_path / 'pets'}", out=str(tmp_path / "out"))
    source = open_source(params)
    assert source.root == tmp_path / "pets" and source.info.class_names == ["cat", "dog"]
    assert check_dataset(params) == 2
