"""The wheel users and cluster workers install: built, installed non-editable, run from elsewhere.

An editable install (what development and CI use) reads the source tree, so it never sees a
sub-package that the wheel leaves out; this test installs the wheel into a fresh venv and imports
every module of the installed copy, with the source tree nowhere on the path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support.paths import REPO

ROOT = REPO

pytestmark = pytest.mark.slow


def wheel_modules(wheel: Path) -> list[str]:
    """Dotted names of every Python module in the wheel (so new sub-packages count at once)."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.endswith(".py") and ".dist-info/" not in n]
    return sorted(n.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for n in names)


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # No PYTHONPATH: the checkout must not be importable, only the installed copy.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, a venv holding it non-editable) built from this checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    # A clean copy: a stale *.egg-info in the checkout lists old files, which setuptools then
    # ships as package data and so hides a sub-package that discovery misses.
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    pip = [sys.executable, "-m", "pip"]
    built = _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp), str(source)],
        tmp,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp.glob("class_overlap-*.whl")
    venv = tmp / "venv"
    made = _run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp
    )
    assert made.returncode == 0, made.stderr
    # The dependencies come from the test venv. A bare path in a .pth file adds that folder but
    # does not run the .pth files in it, so the test venv's editable finder (which maps the
    # packages onto a source tree) stays off and only the wheel's copy can be imported.
    site = Path(_run([str(venv / "bin/python"), "-c", _PURELIB], tmp).stdout.strip())
    (site / "test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = str(venv / "bin/python")
    done = _run([*pip, "--python", python, "install", "--no-deps", "-q", str(wheel)], tmp)
    assert done.returncode == 0, done.stderr
    return wheel, venv


_NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "outputs", "data", "__pycache__")
_PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"

_IMPORT_ALL = """
import importlib, json, sys
names = json.loads(sys.argv[1])
print(json.dumps({n: importlib.import_module(n).__file__ for n in names}))
"""


def test_the_wheel_holds_every_package_of_the_tree(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    packages = set(wheel_modules(wheel))  # a package's __init__.py counts as its name
    for init in ROOT.glob("[a-z]*/**/__init__.py"):
        package = ".".join(init.relative_to(ROOT).parent.parts)
        if package.split(".")[0] in ("flows", "tasks", "storage"):
            assert package in packages, f"{package} is missing from {wheel.name}"


def test_the_installed_wheel_runs_and_imports_every_module(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    wheel, venv = installed
    helped = _run([str(venv / "bin/overlap"), "--help"], tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "usage: overlap" in helped.stdout and "analyze-predictions" in helped.stdout
    modules = wheel_modules(wheel)
    assert {"tasks.sources.cifar", "storage.schemas.images", "flows.cli"} <= set(modules)
    imported = _run([str(venv / "bin/python"), "-c", _IMPORT_ALL, json.dumps(modules)], tmp_path)
    assert imported.returncode == 0, imported.stderr[-3000:]
    files = json.loads(imported.stdout.strip().splitlines()[-1])
    outside = {n: f for n, f in files.items() if not Path(f).resolve().is_relative_to(venv)}
    assert not outside, f"imported from outside the installed copy: {outside}"
