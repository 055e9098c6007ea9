"""Heavy libraries load where they are used: importing the flow, the CLI and a cached run load none.

Each check runs in a fresh process, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.models import hardware
from tests.support.flow_states import CACHED_STAGES
from tests.support.paths import REPO

ROOT = REPO
HEAVY = [
    "torch", "torchvision", "timm", "faiss", "umap", "matplotlib", "sklearn", "scipy", "polars",
    "bokeh",
]  # fmt: skip
LOADED = f"import json, sys; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"


def _env(tmp_path: Path) -> dict[str, str]:
    """This environment with a private Prefect home (its own temporary server) and INFO logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
        "TQDM_DISABLE": "1",
    }


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _loaded(stdout: str) -> list[str]:
    """The heavy modules a process printed as loaded (its last line of output)."""
    return json.loads(stdout.strip().splitlines()[-1])


def test_importing_the_flow_and_building_the_cli_loads_no_heavy_library() -> None:
    code = "import flows.overlap_flow, flows.cli\nflows.cli.build_parser()\n" + LOADED
    assert _loaded(_python(code, {**os.environ, "PYTHONPATH": str(ROOT)}).stdout) == []


def test_device_and_precision_resolve_as_torch_resolves_them() -> None:
    """The cache key resolves them without torch where it is sure; torch must agree."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert hardware.device_name("auto") == device
    cpu = torch.cpu
    native = cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported()
    assert hardware.precision_name("auto", "cpu") == ("bf16" if native else "fp32")
    assert hardware.precision_name("fp32", device) == "fp32"


@pytest.mark.slow
def test_a_cached_run_loads_no_heavy_library_and_draws_no_figure(tmp_path: Path) -> None:
    env = _env(tmp_path)
    args = ["run", "--dataset", "synthetic", "--out", str(tmp_path / "out"), "--epochs", "3"]
    run = f"from flows.cli import main\nassert main({args!r}) == 0\n"
    _python(run, env)  # computes every stage, torch and all
    warm = _python(run + LOADED, env)  # a new process: only what a cached run imports
    assert _loaded(warm.stdout) == []
    log = warm.stdout + warm.stderr
    states = dict(re.findall(r"Task run '(\w+)-[0-9a-f]{3}' - Finished in state (\w+)", log))
    assert {stage: states.get(stage) for stage in CACHED_STAGES} == dict.fromkeys(
        CACHED_STAGES, "Cached"
    )
    assert f"report: {(tmp_path / 'out').resolve()}" in log  # artifacts are published again
    # the run's last lines name both pages
    assert re.search(r"^report: \S+/report\.html\nexplorer: \S+/explorer\.html$", warm.stdout, re.M)
