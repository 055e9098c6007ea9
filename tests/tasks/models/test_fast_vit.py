"""Inference rewrites: each gives the unmodified model's embeddings, on real timm models."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

from tasks.models import fast_vit, models

CPU = torch.device("cpu")


def _vit(name: str = "vit_tiny_patch16_224", **kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=0, img_size=64, **kwargs).eval()
    with torch.no_grad():  # LayerScale starts at 1e-5, which would hide a skipped branch
        for key, parameter in model.named_parameters():
            if key.endswith(".gamma"):
                parameter.uniform_(0.5, 1.5)
    return model


def _images(count: int = 5) -> torch.Tensor:
    return torch.randn(count, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _embed(model: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.inference_mode():
        return model(x.to(next(model.parameters()).dtype), **kwargs).float()


def test_chunked_attention_matches_timm_across_ragged_chunks(monkeypatch) -> None:
    model = _vit()
    reference = _embed(model, _images())
    # two images' scores per chunk: 5 images make chunks of 2, 2 and 1
    monkeypatch.setattr(fast_vit, "SCORES_CHUNK_BYTES", 2 * 3 * 17 * 17 * 4)
    assert fast_vit.chunk_attention(model) == len(model.blocks)
    assert isinstance(model.blocks[0].attn, fast_vit.ChunkedAttention)
    chunks, softmax = [], torch.softmax
    monkeypatch.setattr(
        fast_vit.torch, "softmax", lambda s, dim: chunks.append(len(s)) or softmax(s, dim=dim)
    )
    torch.testing.assert_close(_embed(model, _images()), reference, atol=1e-5, rtol=1e-5)
    assert chunks == [6, 6, 3] * len(model.blocks)  # 3 heads x (2, 2, 1) images


@pytest.mark.parametrize(
    "name", ["vit_tiny_patch16_224", "vit_small_patch14_reg4_dinov2"]
)  # the second has LayerScale and register tokens, as DINOv2 does
def test_class_token_block_matches_the_full_last_block(name: str) -> None:
    model = _vit(name)
    reference = _embed(model, _images())
    assert fast_vit.class_token_only(model)
    assert isinstance(model.blocks[-1], fast_vit.ClassTokenBlock)
    torch.testing.assert_close(_embed(model, _images()), reference, atol=1e-5, rtol=1e-5)


def test_average_pooled_models_keep_their_last_block() -> None:
    model = _vit(global_pool="avg", class_token=False)
    reference = _embed(model, _images())
    assert not fast_vit.class_token_only(model)
    assert type(model.blocks[-1]) is timm.models.vision_transformer.Block
    torch.testing.assert_close(_embed(model, _images()), reference)


def test_masked_attention_falls_back_to_timm() -> None:
    model = _vit()
    tokens = 1 + (64 // 16) ** 2
    mask = torch.ones(tokens, tokens, dtype=torch.bool).tril()
    reference = _embed(model, _images(), attn_mask=mask)
    fast_vit.chunk_attention(model)
    fast_vit.class_token_only(model)
    torch.testing.assert_close(_embed(model, _images(), attn_mask=mask), reference)


def test_prepare_in_fp32_keeps_the_embeddings_and_bf16_stays_close() -> None:
    original = _vit()
    reference = _embed(original, _images())
    fp32 = models.prepare(copy.deepcopy(original), CPU, "fp32")
    assert isinstance(fp32.blocks[-1], fast_vit.ClassTokenBlock)
    # the class-token block does its own attention: chunking must not reach inside it
    assert type(fp32.blocks[-1].inner.attn) is timm.models.vision_transformer.Attention
    torch.testing.assert_close(_embed(fp32, _images()), reference, atol=1e-5, rtol=1e-5)
    bf16 = models.prepare(copy.deepcopy(original), CPU, "bf16")
    cosine = nn.functional.cosine_similarity(_embed(bf16, _images()), reference)
    assert cosine.min() > 0.999


@pytest.mark.skipif(
    not fast_vit.packing_supported(CPU, torch.bfloat16), reason="no oneDNN bf16 packing here"
)
def test_packed_model_survives_deepcopy() -> None:
    model = models.prepare(_vit(), CPU, "bf16")
    assert any(isinstance(m, fast_vit.PackedLinear) for m in model.modules())
    torch.testing.assert_close(_embed(copy.deepcopy(model), _images()), _embed(model, _images()))
