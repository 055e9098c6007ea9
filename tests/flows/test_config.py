"""The run configuration: composed of the stages' models, each validated once; checks run once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from flows import preflight
from flows.cli import main
from flows.config import SYNTHETIC_MODEL, RunConfig, RunParams
from flows.overlap_flow import class_overlap
from tasks.core.params import ClassifierParams, EmbeddingsParams, StageParams


def test_each_stage_gets_its_own_validated_model() -> None:
    config = RunConfig(dataset="synthetic", hidden_size=16, overlap_k=2.0)
    parts = config.params
    for name, model in RunParams.models().items():
        part = getattr(parts, name)
        assert type(part) is model  # the stage's own model, not the whole configuration
        assert part.model_dump() == {field: getattr(config, field) for field in model.model_fields}
    assert type(parts.common) is StageParams and type(parts.classifier) is ClassifierParams
    # a model validator of the stage's model ran: the synthetic dataset's model filled in
    assert type(parts.embeddings) is EmbeddingsParams
    assert parts.embeddings.model == config.model == SYNTHETIC_MODEL
    assert parts.overlap.overlap_k == 2.0 and parts.classifier.hidden_size == 16


def test_the_flat_fields_follow_the_stages_in_order() -> None:
    """The CLI's --help and the deployments' schema list the fields as the stages run."""
    fields = list(RunConfig.model_fields)
    assert fields[:4] == ["dataset", "out", "seed", "data_dir"]  # every stage's, then images'
    firsts = ["model", "runner", "knn_k", "centroid_split", "overlap_rule", "val_fraction"]
    firsts += ["hidden_size", "confusion_rule", "grid_images"]
    assert [fields.index(name) for name in firsts] == sorted(fields.index(n) for n in firsts)
    assert fields[-1] == "explorer_images"


def test_a_field_every_stage_shares_is_refused_once() -> None:
    with pytest.raises(ValidationError) as refused:
        RunConfig(dataset="nope", overlap_k=-1)
    assert [(e["loc"], e["type"]) for e in refused.value.errors()] == [
        (("dataset",), "value_error"),
        (("overlap_k",), "greater_than_equal"),
    ]


def test_a_bad_value_through_the_command_line_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["run", "--dataset", "synthetic", "--out", str(tmp_path), "--epochs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["overlap: error: --epochs: Input should be greater than or equal to 1"]


def test_a_changed_copy_is_validated_again_and_the_original_is_frozen() -> None:
    config = RunConfig(dataset="synthetic")
    changed = config.model_copy(update={"confusion_rule": "sigma", "confusion_k": 1.0})
    assert changed.params.confusion.confusion_rule == "sigma"  # the stage sees the change
    assert config.params.confusion.confusion_rule == "binomial"
    with pytest.raises(ValidationError, match="confusion_k"):
        config.model_copy(update={"confusion_k": -1.0})
    with pytest.raises(ValidationError, match="frozen"):
        config.confusion_k = 1.0


def _folder_with_a_broken_class(root: Path) -> str:
    """cat: two PNGs; dog: two files that are no images (the images stage refuses the run)."""
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            if name == "cat":
                Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(root / name / f"{i}.png")
            else:
                (root / name / f"{i}.jpg").write_bytes(b"not an image")
    return f"imagefolder:{root}"


@pytest.mark.usefixtures("prefect_server")
def test_the_run_checks_run_once_per_run(tmp_path: Path, monkeypatch, capsys) -> None:
    """The CLI checks before the flow starts, the flow does not again; a deployment's run (the
    flow called with a configuration nobody checked) is checked by the flow."""
    checked: list[str] = []
    real = preflight.check_dataset
    monkeypatch.setattr(
        preflight, "check_dataset", lambda params: checked.append(params.dataset) or real(params)
    )
    dataset = _folder_with_a_broken_class(tmp_path / "images")
    out = tmp_path / "out"
    assert main(["run", "--dataset", dataset, "--out", str(out), "--no-pretrained"]) == 1
    assert "classes without readable images: dog" in capsys.readouterr().err
    assert checked == [dataset]
    with pytest.raises(ValueError, match="classes without readable images"):
        class_overlap(RunConfig(dataset=dataset, out=str(out), pretrained=False))
    assert checked == [dataset, dataset]
