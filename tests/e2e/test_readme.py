"""The README's commands run as written, in order, in a fresh folder: its shell, Python and SQL.

A block that needs the network, a GPU, a cluster or a Prefect server carries a marker on the
line before its fence, ``<!-- readme-test: skip REASON -->``, and is skipped with that reason;
every other ``bash``, ``python`` and ``sql`` block runs, the demo run among them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.paths import REPO

ROOT = REPO
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s+(?P<reason>.*?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")
RUN = ("bash", "python", "sql")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason given by a skip marker, or None


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text`` in order, with the skip reason of the line before each."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = SKIP.search(lines[i - 1]) if i else None
        code = "\n".join(lines[i + 1 : end]) + "\n"
        blocks.append(Block(i + 1, opened["lang"], code, marker["reason"] if marker else None))
        i = end + 1
    return blocks


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)  # the checkout's code, through the test venv's scripts
    env["PREFECT_HOME"] = str(home / ".prefect-home")
    env["TQDM_DISABLE"] = "1"
    return env


_SQL = """
import duckdb, sys
con = duckdb.connect()
for statement in sys.stdin.read().split(";"):
    if statement.strip() and not all(
        line.strip().startswith("--") or not line.strip() for line in statement.splitlines()
    ):
        con.sql(statement).fetchall()
"""


def run_block(block: Block, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run one block in ``cwd`` as a user would: bash, python, or SQL through duckdb."""
    if block.lang == "bash":
        argv, stdin = ["bash", "-euo", "pipefail", "-c", block.code], None
    elif block.lang == "python":
        argv, stdin = [sys.executable, "-c", block.code], None
    else:
        argv, stdin = [sys.executable, "-c", _SQL], block.code
    return subprocess.run(
        argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=1800
    )


def test_the_parser_reads_languages_and_skip_markers() -> None:
    text = "a\n<!-- readme-test: skip needs a server -->\n```bash\nls\n```\n```python\nx = 1\n```\n"
    assert readme_blocks(text) == [
        Block(3, "bash", "ls\n", "needs a server"),
        Block(6, "python", "x = 1\n", None),
    ]


def test_every_skipped_block_says_why_and_the_demo_is_not_skipped() -> None:
    blocks = [b for b in readme_blocks(README.read_text()) if b.lang in RUN]
    assert all(b.skip for b in blocks if "pip install" in b.code or "prefect server" in b.code)
    demo = [b for b in blocks if "--dataset synthetic --out outputs/demo" in b.code]
    assert demo and not any(b.skip for b in demo)


def test_the_readme_commands_run_in_order_in_a_fresh_folder(tmp_path: Path) -> None:
    # A fresh clone's layout as the README assumes it: a .venv with the package's scripts.
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # its real data (the predictions example)
    env = _env(tmp_path)
    ran = []
    for block in readme_blocks(README.read_text()):
        if block.lang not in RUN or block.skip:
            continue
        done = run_block(block, tmp_path, env)
        assert done.returncode == 0, (
            f"README.md line {block.line} ({block.lang}) failed:\n{block.code}\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
        ran.append(block.line)
    assert len(ran) >= 6  # the demo, inspect, and the polars and DuckDB recipes
    assert (tmp_path / "outputs" / "demo" / "latest.json").is_file()
