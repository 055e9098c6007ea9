"""Shared benchmark helpers: timing with device sync, medians, the machine record, JSON output."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
OUT = Path(__file__).parent / "out"
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
PACKAGES = ("torch", "torchvision", "timm", "numpy", "pillow", "faiss-cpu", "prefect")


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work so that a timer sees it (no-op on the CPU)."""
    import torch

    if torch.cuda.is_available() and torch.device(device or "cuda").type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], T], device: torch.device | str | None = None) -> tuple[T, float]:
    """The result of ``fn`` and its wall time in seconds, GPU work included."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return float(statistics.median(values))


def _cpu_info() -> dict[str, Any]:
    import torch

    cpuinfo = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name") or platform.processor(),
        "logical_cpus": os.cpu_count(),
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
        "torch_native_bf16": bool(
            torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
        ),
    }


def _gpu_info() -> dict[str, Any] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "count": torch.cuda.device_count(),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
        "bf16": torch.cuda.is_bf16_supported(),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """What the figures were measured on: CPU flags, GPU, versions, threads, load."""
    # torch here, not at import: a benchmark's own process stays small, and a child it forks
    # inherits its peak RSS (Linux keeps ru_maxrss across exec)
    import torch

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_info(),
        "gpu": _gpu_info(),
        "versions": {name: v for name in PACKAGES if (v := _version(name))},
        "threads": {
            "torch": torch.get_num_threads(),
            "torch_interop": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "load_average": os.getloadavg(),
    }


def write_json(name: str, record: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``record`` under benchmarks/out (git-ignored) unless a path is given."""
    path = path or OUT / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def prefect_env(home: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with a private Prefect home (fresh database and result store), no analytics,
    quiet logs, and a temporary local server rather than the user's (no PREFECT_API_URL)."""
    env = {
        # a fresh home migrates its database first: on a busy 2-core machine that outlasts 20 s
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "TQDM_DISABLE": "1",
        **environ,
        "PREFECT_HOME": str(home),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    return env
