"""CNN inference rewrites: each gives the unmodified timm model's embeddings, on real models."""

from __future__ import annotations

import copy
import pickle

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from tasks.models import fast_cnn, models
from tasks.models.embed import Extractor

CPU = torch.device("cpu")
# ReLU6 + Conv2dSame (tf_ padding), ReLU with separate act modules + downsample, LayerNorm + GELU
# MLP (no batch norm), SiLU + squeeze-excite gates, hard-swish
CNNS = [
    "tf_efficientnet_lite0",
    "resnet18",
    "convnext_atto",
    "efficientnet_b0",
    "mobilenetv3_small_050",
]


def _cnn(name: str) -> nn.Module:
    """Random weights, and random batch-norm statistics: a fresh norm (mean 0, var 1, scale 1,
    shift 0) is the identity, which would hide a wrong fold."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=0).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


def _images(count: int = 5, size: int = 96) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(1))


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    parameter = next(model.parameters())
    with torch.inference_mode():
        return model(x.to(parameter.dtype).contiguous(memory_format=torch.channels_last)).float()


@pytest.mark.parametrize("name", CNNS)
def test_prepared_fp32_equals_timm(name: str) -> None:
    model = _cnn(name)
    reference = _embed(model, _images())
    prepared = models.prepare(copy.deepcopy(model), CPU, "fp32")
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in prepared.modules()) == 0  # all folded
    assert norms == 0 or any(isinstance(m, fast_cnn.PackedConv2d) for m in prepared.modules())
    scale = float(reference.abs().max())
    torch.testing.assert_close(_embed(prepared, _images()), reference, atol=1e-5 * scale, rtol=0)


@pytest.mark.parametrize("name", CNNS)
def test_prepared_bf16_close_to_timm(name: str) -> None:
    model = _cnn(name)
    reference = _embed(model, _images())
    prepared = models.prepare(copy.deepcopy(model), CPU, "bf16")
    assert next(prepared.parameters()).dtype == torch.bfloat16
    cosine = F.cosine_similarity(_embed(prepared, _images()), reference, dim=1)
    assert float(cosine.min()) >= 0.99


def test_activations_are_fused_into_the_convolutions_they_follow() -> None:
    model = _cnn("resnet18")  # conv -> bn -> act1 as three modules
    models.prepare(model, CPU, "fp32")
    block = model.layer1[0]
    assert isinstance(block.conv1, fast_cnn.PackedConv2d) and block.conv1.activation == "relu"
    assert isinstance(block.bn1, nn.Identity) and isinstance(block.act1, nn.Identity)
    assert block.conv2.activation == "none"  # its ReLU comes after the residual sum
    assert isinstance(block.act2, nn.ReLU)


class ReadsRawOutputTwice(nn.Module):
    """conv -> [bn] -> act, plus the conv's raw output again: folding the norm or fusing the
    activation into the convolution would change the sum."""

    def __init__(self, norm: bool) -> None:
        super().__init__()
        self.conv, self.act, self.other = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.conv(x)
        return (self.other(self.act(self.bn(raw))) + raw).mean((2, 3))


def test_a_fold_that_would_change_the_output_is_not_made() -> None:
    model = ReadsRawOutputTwice(norm=True).eval()
    with torch.no_grad():
        model.bn.running_mean.fill_(0.3)
        model.bn.running_var.fill_(2.0)
    reference = _embed(model, _images())
    assert fast_cnn.conv_consumers(model, (nn.BatchNorm2d,)) == [("conv", "bn")]
    assert fast_cnn.fold_batchnorms(model) == 0
    assert isinstance(model.bn, nn.BatchNorm2d)
    torch.testing.assert_close(_embed(model, _images()), reference)


def test_a_fusion_that_would_change_the_output_is_not_made() -> None:
    model = ReadsRawOutputTwice(norm=False).eval()
    reference = _embed(model, _images())
    assert fast_cnn.conv_consumers(model, (nn.ReLU,)) == [("conv", "act")]
    assert fast_cnn.pack_convolutions(model) == 0
    assert type(model.conv) is nn.Conv2d and isinstance(model.act, nn.ReLU)
    torch.testing.assert_close(_embed(model, _images()), reference)


def test_packed_model_survives_copy_and_pickle() -> None:
    model = models.prepare(_cnn("resnet18"), CPU, "bf16")
    reference = _embed(model, _images(3))
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(_embed(clone, _images(3)), reference)


def test_extractor_feeds_a_cnn_channels_last() -> None:
    model = _cnn("resnet18")
    prep = models.preprocessing_of(model)
    extractor = Extractor(models.prepare(model, CPU, "fp32"), prep, CPU, "fp32", batch_size=4)
    assert extractor.memory_format == torch.channels_last
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    vectors = extractor.embed_arrays(images)
    assert vectors.shape == (6, 512)
    assert abs(float((vectors**2).sum(1).mean()) - 1.0) < 1e-5
