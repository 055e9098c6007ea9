"""Inference-only rewrites of convolutional timm models: the same maths, less memory traffic.

A BatchNorm after a convolution is, at inference, a per-channel scale and shift: folded into the
convolution's weights and bias it costs nothing, where unfolded it is one more pass over every
activation. On a CPU, oneDNN then runs each convolution from weights laid out once, with the
activation that follows applied in the same pass (2x per convolution measured in bf16).

Which convolution feeds which norm or activation is observed on one small forward pass, so the
rewrites need no list of architectures. Each is checked on a random input against the model
before it, and a model whose output it would change (a convolution's raw output also read
elsewhere) is left as it was. Tested against the unmodified timm model in
``tests/tasks/models/test_fast_cnn.py``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from tasks.models.packed import PackedWeights

log = logging.getLogger(__name__)

PROBE_SIZE = 64  # pixels: enough for every timm CNN's strides, cheap to run
FOLD_TOLERANCE = 1e-5  # fp32 folding changes only rounding: relative to the largest feature
PACK_MIN_COSINE = 0.999  # packing in bf16 rounds differently; a wrong fusion scores far lower

# Activations oneDNN applies inside a convolution: module type -> (its name, its scalars).
FUSABLE_ACTIVATIONS: dict[type[nn.Module], tuple[str, list[float]]] = {
    nn.ReLU: ("relu", []),
    nn.ReLU6: ("hardtanh", [0.0, 6.0]),
    nn.SiLU: ("swish", []),
    nn.Hardswish: ("hardswish", []),
    nn.Sigmoid: ("sigmoid", []),
}


def is_convolutional(model: nn.Module) -> bool:
    """True when the model has 2-D convolutions beyond a patch embedding (a CNN or a hybrid)."""
    return sum(isinstance(m, nn.Conv2d | PackedConv2d) for m in model.modules()) > 1


def conv_consumers(
    model: nn.Module, kinds: tuple[type[nn.Module], ...], size: int = PROBE_SIZE
) -> list[tuple[str, str]]:
    """(convolution, module) names where a module of ``kinds`` reads a convolution's output as
    the convolution left it (not summed into in place, as a residual ``x += shortcut`` does).

    Found by hooks on one forward pass of a 1-image batch in the model's own dtype; a module
    run more than once per pass (shared weights) is never paired.
    """
    outputs: dict[str, tuple[torch.Tensor, int]] = {}
    calls: dict[str, int] = {}
    pairs: list[tuple[str, str]] = []
    names = {module: name for name, module in model.named_modules()}

    def before(module: nn.Module, inputs: tuple[Any, ...]) -> None:  # an in-place op runs next
        name = names[module]
        calls[name] = calls.get(name, 0) + 1
        for conv, (out, version) in outputs.items():
            if (
                isinstance(module, kinds)
                and inputs
                and out is inputs[0]
                and out._version == version
            ):
                pairs.append((conv, name))

    def after(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        outputs[names[module]] = (output, output._version)

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    consumers = [m for m in model.modules() if isinstance(m, kinds)]
    handles = [m.register_forward_pre_hook(before) for m in convs + consumers]
    handles += [m.register_forward_hook(after) for m in convs]
    parameter = next(model.parameters())
    probe = torch.zeros(1, 3, size, size, dtype=parameter.dtype, device=parameter.device)
    try:
        with torch.no_grad():  # not inference_mode: its tensors keep no version counter
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return [(c, n) for c, n in pairs if calls[c] == 1 and calls[n] == 1]


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _features(model: nn.Module, size: int) -> torch.Tensor:
    parameter = next(model.parameters())
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(2, 3, size, size, generator=generator).to(parameter)
    with torch.inference_mode():
        return model(probe).float()


def _adopt(model: nn.Module, rewritten: nn.Module) -> None:
    for name, child in rewritten.named_children():
        setattr(model, name, child)


def _without_norm(norm: nn.BatchNorm2d) -> nn.Module:
    """What is left of a norm once folded: nothing, or timm's fused dropout and activation."""
    rest = [getattr(norm, name, None) for name in ("drop", "act")]
    rest = [m for m in rest if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
    return nn.Sequential(*rest) if len(rest) > 1 else (rest[0] if rest else nn.Identity())


def fold_batchnorms(model: nn.Module, size: int = PROBE_SIZE) -> int:
    """Fold every batch norm that follows a convolution into it, in place; the count folded.

    The model must be in eval mode, in fp32 (folding in bf16 would round the folded weights).
    Nothing changes when the folded model's features differ from the original's.
    """
    pairs = conv_consumers(model, (nn.BatchNorm2d,), size)
    if not pairs:
        return 0
    folded = copy.deepcopy(model)
    for conv_name, norm_name in pairs:
        norm = folded.get_submodule(norm_name)
        _replace(folded, conv_name, fuse_conv_bn_eval(folded.get_submodule(conv_name), norm))
        _replace(folded, norm_name, _without_norm(norm))
    expected, got = _features(model, size), _features(folded, size)
    scale = float(expected.abs().max().clamp(min=1.0))
    if not torch.allclose(got, expected, rtol=0.0, atol=FOLD_TOLERANCE * scale):
        log.info("batch-norm folding changed %s's output; left unfolded", type(model).__name__)
        return 0
    _adopt(model, folded)
    return len(pairs)


class PackedConv2d(PackedWeights):
    """A CPU Conv2d whose weight oneDNN lays out once, with the following activation fused in.

    The plain ``weight`` and ``bias`` stay, so code that reads them directly still works.
    """

    def __init__(
        self, conv: nn.Conv2d, activation: str = "none", scalars: list[float] | None = None
    ):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.activation, self.scalars = activation, list(scalars or [])
        self._pack()

    def _pack(self) -> None:
        packed = torch.ops.mkldnn._reorder_convolution_weight(
            self.weight.detach(), self.padding, self.stride, self.dilation, self.groups, None
        )
        self.register_buffer("packed", packed, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.packed, self.bias, self.padding, self.stride, self.dilation, self.groups,
            self.activation, self.scalars, "",
        )  # fmt: skip


def _packable(conv: nn.Module) -> bool:
    """A plain Conv2d (not a subclass with its own forward, e.g. timm's Conv2dSame)."""
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def conv_packing_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """True where PackedConv2d applies: a CPU with oneDNN that runs this dtype's kernel."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        conv = nn.Conv2d(4, 8, 3, padding=1).to(dtype)
        x = torch.linspace(-1, 1, 2 * 4 * 6 * 6).view(2, 4, 6, 6).to(dtype)
        got = PackedConv2d(conv, "relu")(x).float()
        return torch.allclose(got, F.relu(conv(x)).float(), atol=1e-2, rtol=1e-2)
    except (AttributeError, RuntimeError) as error:  # an older or oneDNN-less torch build
        log.debug("convolution packing unavailable: %s", error)
        return False


def pack_convolutions(model: nn.Module, size: int = PROBE_SIZE) -> int:
    """Swap plain Conv2d layers for PackedConv2d in place, each with the activation that reads
    its output fused in (that activation becomes an Identity); the count swapped.

    Nothing changes when the packed model's features drift from the model's before.
    """
    kinds = tuple(FUSABLE_ACTIVATIONS)
    followers = dict(conv_consumers(model, kinds, size))
    packed = copy.deepcopy(model)
    swapped = 0
    for name, conv in list(packed.named_modules()):
        if not _packable(conv):
            continue
        activation, scalars = "none", []
        follower = followers.get(name)
        if follower is not None and _fusable(packed.get_submodule(follower)):
            activation, scalars = FUSABLE_ACTIVATIONS[type(packed.get_submodule(follower))]
            _replace(packed, follower, nn.Identity())
        _replace(packed, name, PackedConv2d(conv, activation, scalars))
        swapped += 1
    if not swapped:
        return 0
    expected, got = _features(model, size), _features(packed, size)
    if float(F.cosine_similarity(got, expected, dim=1).min()) < PACK_MIN_COSINE:
        log.info("convolution packing changed %s's output; left as it was", type(model).__name__)
        return 0
    _adopt(model, packed)
    return swapped


def _fusable(activation: nn.Module) -> bool:
    return type(activation) in FUSABLE_ACTIVATIONS
