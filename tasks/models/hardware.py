"""The device and precision a run resolves to, without importing torch where the answer is sure.

The embeddings stage's cache key holds the resolved device and precision, so a run in which every
stage is cached resolves them too: importing torch only to learn "cpu, fp32" would cost seconds
and a gigabyte. Where this module cannot be sure (a GPU driver is present, a platform without
``/proc/cpuinfo``), it asks torch; the extraction itself resolves through the same functions, so
the key and the work always agree.
"""

from __future__ import annotations

import ctypes.util
import functools
import importlib.util
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# Any of these means a GPU driver may answer: then only torch can say whether CUDA is usable.
GPU_DRIVER_PATHS = ("/dev/nvidiactl", "/proc/driver/nvidia", "/sys/module/nvidia", "/dev/dxg")
GPU_DRIVER_PATHS += ("/dev/kfd",)  # ROCm builds of torch answer torch.cuda too
BF16_CPU_FLAGS = {"amx_tile", "avx512_bf16"}  # what torch.cpu checks, as Linux names them


class ModelError(ValueError):
    """A model that cannot be built as asked; the message says what to do."""


@functools.cache
def cuda_impossible() -> bool:
    """True when ``torch.cuda.is_available()`` is surely False: a CPU-only torch build, or a
    Linux machine without any GPU driver."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False  # no torch to ask: let the import say so where the model is built
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    if not any(lib.glob("*torch_cuda*")) and not any(lib.glob("*torch_hip*")):
        return True
    if sys.platform != "linux" or any(Path(p).exists() for p in GPU_DRIVER_PATHS):
        return False
    return ctypes.util.find_library("cuda") is None  # no driver library: no CUDA device either


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux), None where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    lines = [ln for ln in text.splitlines() if ln.startswith("flags")]
    return frozenset(lines[0].split(":", 1)[1].split()) if lines else None


def device_name(requested: str) -> str:
    """auto: "cuda" when present, else "cpu"; asking for CUDA without one is an error."""
    if requested == "cpu":
        return "cpu"
    available = False if cuda_impossible() else _torch_cuda_available()
    if requested == "cuda" and not available:
        raise ModelError(
            "--device cuda was asked for but no CUDA device is visible; use --device cpu"
        )
    if requested == "auto":
        return "cuda" if available else "cpu"
    return requested


def _torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def native_bf16(device: str) -> bool:
    """True when the hardware runs bf16 natively (elsewhere it can be slower than fp32)."""
    if device == "cpu" and (flags := cpu_flags()) is not None:
        return bool(flags & BF16_CPU_FLAGS)
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return bool(cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported())


def precision_name(requested: str, device: str) -> str:
    """auto: bf16 where native, else fp32."""
    if requested == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if requested == "bf16" and not native_bf16(device):
        log.warning(
            "bf16 asked for on %s without native bf16 support: expect it to be slow", device
        )
    return requested
