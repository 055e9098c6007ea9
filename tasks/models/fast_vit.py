"""Inference-only rewrites of timm models: the same maths, less work or better cache use.

Each rewrite is checked against the unmodified model in ``tests/tasks/models/test_fast_vit.py``.
They apply only to modules whose exact types they know, and leave anything else as it was.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Attention, Block, VisionTransformer
from torch import nn

from tasks.models.packed import PackedWeights

log = logging.getLogger(__name__)

# Attention scores of this many bytes per chunk stay in a core's L2 cache (2 MiB on the CPUs
# measured); bigger chunks spill to L3 and ran ViT-S/16 ~20% slower end to end.
SCORES_CHUNK_BYTES = 2 * 2**20


class PackedLinear(PackedWeights, nn.Linear):
    """A bf16 CPU Linear whose weight oneDNN reorders once, with bias (and GELU) fused in.

    ``nn.Linear`` re-lays the weight out on every call and adds the bias in a separate pass;
    packing once made ViT-S/16 forward ~15% faster on a 2-core AVX512-BF16 CPU. The plain
    ``weight`` and ``bias`` stay, so code that reads them directly still works.
    """

    def __init__(self, linear: nn.Linear, activation: str = "none") -> None:
        nn.Module.__init__(self)  # not nn.Linear's: it would draw fresh random weights
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.activation = activation  # "none" or "gelu" (exact, erf), as oneDNN names them
        self._pack()

    def _pack(self) -> None:
        packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach())
        self.register_buffer("packed", packed, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        algorithm = "none" if self.activation == "gelu" else ""
        return torch.ops.mkldnn._linear_pointwise(
            x.contiguous(), self.packed, self.bias, self.activation, [], algorithm
        )


def packing_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """True where PackedLinear applies: bf16 on a CPU with oneDNN and native bf16."""
    if device.type != "cpu" or dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return False
    try:
        weight = torch.linspace(-1, 1, 32, dtype=dtype).view(4, 8)
        x, bias = torch.ones(2, 8, dtype=dtype), torch.ones(4, dtype=dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight)
        got = torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
        return torch.allclose(got.float(), F.linear(x, weight, bias).float())
    except (AttributeError, RuntimeError) as error:  # an older or oneDNN-less torch build
        log.debug("linear packing unavailable: %s", error)
        return False


def pack_linears(model: nn.Module) -> int:
    """Swap every plain nn.Linear for a PackedLinear; fold a timm Mlp's GELU into fc1."""
    swapped = 0
    for module in list(model.modules()):
        fusable = isinstance(module, Mlp) and type(module.act) is nn.GELU
        if fusable and module.act.approximate == "none" and type(module.fc1) is nn.Linear:
            module.fc1, module.act = PackedLinear(module.fc1, "gelu"), nn.Identity()
            swapped += 1
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:  # not subclasses: nn.MultiheadAttention reads .weight
                setattr(module, name, PackedLinear(child))
                swapped += 1
    return swapped


def _plain(attention: nn.Module) -> bool:
    """A timm Attention without q/k norms, output norm or gate: the rewrites' exact domain."""
    return (
        type(attention) is Attention
        and all(type(getattr(attention, n)) is nn.Identity for n in ("q_norm", "k_norm", "norm"))
        and getattr(attention, "gate", None) is None
    )


class ChunkedAttention(nn.Module):
    """A timm Attention that attends a few images at a time, so the scores stay in L2 cache.

    Same weights and maths as the module it wraps. On a 2-core CPU in bf16 it ran ViT-S/16
    ~20% faster than timm's matmul-softmax-matmul path over the whole batch, and faster than
    ``scaled_dot_product_attention``, whose flash kernel is slow at 197 tokens.
    """

    def __init__(self, attention: Attention) -> None:
        super().__init__()
        self.inner = attention

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            return self.inner(x, attn_mask=attn_mask, is_causal=is_causal)
        a = self.inner
        batch, tokens, _ = x.shape
        heads, head_dim = a.num_heads, a.head_dim
        qkv = a.qkv(x).view(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        out = x.new_empty(batch, heads, tokens, head_dim)
        step = max(1, SCORES_CHUNK_BYTES // (heads * tokens * tokens * x.element_size()))
        unused = x.new_zeros(1, 1, 1)  # baddbmm with beta=0 ignores it; it folds in the scale
        for start in range(0, batch, step):
            q, k, v = qkv[:, start : start + step].reshape(3, -1, tokens, head_dim)
            scores = torch.baddbmm(unused, q, k.transpose(1, 2), beta=0, alpha=a.scale)
            weights = torch.softmax(scores, dim=-1)
            torch.bmm(weights, v, out=out[start : start + step].view(-1, tokens, head_dim))
        return a.proj(out.transpose(1, 2).reshape(batch, tokens, heads * head_dim))


def chunk_attention(model: nn.Module) -> int:
    """Wrap every plain timm Attention in a ChunkedAttention; return how many."""
    wrapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if _plain(child):
                setattr(module, name, ChunkedAttention(child))
                wrapped += 1
    return wrapped


class ClassTokenBlock(nn.Module):
    """A ViT's last block computed for the class token only: all a token-pooled model reads.

    The class token still attends to every token, so its output is unchanged; the other
    tokens' attention rows and MLPs, about 1/12 of ViT-S/16's work, are skipped.
    """

    def __init__(self, block: Block) -> None:
        super().__init__()
        if isinstance(block.attn, ChunkedAttention):  # this block attends in its own way
            block.attn = block.attn.inner
        self.inner = block

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            return self.inner(x, attn_mask=attn_mask, is_causal=is_causal)
        b, a = self.inner, self.inner.attn
        batch, tokens, _ = x.shape
        qkv = a.qkv(b.norm1(x)).view(batch, tokens, 3, a.num_heads, a.head_dim)
        q, k, v = qkv[:, :1, 0], qkv[:, :, 1], qkv[:, :, 2]
        attended = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=a.scale
        )
        cls = x[:, :1] + b.ls1(a.proj(attended.transpose(1, 2).reshape(batch, 1, -1)))
        return cls + b.ls2(b.mlp(b.norm2(cls)))


def _unwrapped(attention: nn.Module) -> nn.Module:
    return attention.inner if isinstance(attention, ChunkedAttention) else attention


def class_token_only(model: nn.Module) -> bool:
    """Compute a token-pooled timm ViT's last block for the class token alone, if one applies.

    Safe only where the features are the class token after a per-token norm: global_pool
    "token", no attention pooling, and a plain last block.
    """
    eligible = (
        isinstance(model, VisionTransformer)
        and model.global_pool == "token"
        and model.attn_pool is None
        and model.has_class_token
        and len(model.blocks) > 0
        and type(model.blocks[-1]) is Block
        and _plain(_unwrapped(model.blocks[-1].attn))
    )
    if eligible:
        model.blocks[-1] = ClassTokenBlock(model.blocks[-1])
    return eligible
