"""Is a pretrained timm checkpoint available (cached, or its host reachable)? One probe, no retries.

Without a network, timm's download through huggingface_hub retries for over a minute before it
fails; one short request to the hub says the same in seconds.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import timm

PROBE_TIMEOUT_SECONDS = 5.0
# The files timm asks the hub for, safetensors first (timm.models._hub).
HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def cached(name: str) -> bool:
    """True when the checkpoint of ``name`` is already in the Hugging Face or torch hub cache."""
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return False
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILES
        for filename in files:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                return True
    if cfg.url:
        checkpoints = os.path.join(os.path.expanduser(_torch_hub_dir()), "checkpoints")
        return os.path.isfile(os.path.join(checkpoints, os.path.basename(cfg.url)))
    return False


def _torch_hub_dir() -> str:
    import torch.hub

    return torch.hub.get_dir()


def hub_unreachable(name: str) -> str | None:
    """None when the weights of ``name`` can be had; else why not, in a few words.

    Honours HF_HUB_OFFLINE and the usual proxy variables (urllib reads them as huggingface_hub
    does).
    """
    if cached(name):
        return None
    from huggingface_hub import constants

    cfg = timm.models.get_pretrained_cfg(name)
    from_hub = cfg is None or bool(cfg.hf_hub_id)  # timm prefers the hub when a model has both
    if from_hub and constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set and they are not cached"
    target = constants.ENDPOINT if from_hub else cfg.url
    request = urllib.request.Request(target, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_SECONDS):
            return None
    except urllib.error.HTTPError:
        return None  # the host answered: the download itself will say what is wrong
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return f"{target} unreachable: {reason}"
