"""A re-run that computes nothing against Prefect's own floor, and the flow module's import cost.

(a) ``overlap run --dataset synthetic --out DIR`` warm (every stage cached), each in a new
process; (b) Prefect's floor: a cached flow of ten empty tasks, each in a new process, under the
same isolation (its own PREFECT_HOME, a temporary server per process); (a) and (b) interleaved,
the median of ``--repeats`` each, wall, CPU and peak RSS (``wait4``: the largest process, the
temporary server included). (c) ``import flows.overlap_flow``: import time (``-X importtime``)
and peak RSS in this checkout and in a checkout of ``--base`` (``git worktree add``).

    .venv/bin/python benchmarks/rerun_floor.py [--base COMMIT] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import environment, median, prefect_env, write_json

ROOT = Path(__file__).resolve().parents[1]
FLOOR_FLOW = """
from prefect import flow, task
from prefect.cache_policies import INPUTS


@task(cache_policy=INPUTS, persist_result=True)
def empty(i: int) -> int:
    return i


@flow
def floor() -> list[int]:
    return [empty(i) for i in range(10)]


floor()
"""


def measured(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> dict[str, float]:
    """Run ``argv`` to the end; wall s, CPU s and peak RSS MiB of its largest process."""
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = process.stdout.read() if process.stdout else b""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{output.decode(errors='replace')[-3000:]}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        "output": output.decode(errors="replace"),
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Median of each measure over ``runs``."""
    keys = [k for k in runs[0] if k != "output"]
    return {k: median([r[k] for r in runs]) for k in keys}


def import_cost(checkout: Path, repeats: int) -> dict[str, float]:
    """Median import time (-X importtime), wall and peak RSS of ``import flows.overlap_flow``."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    argv = [sys.executable, "-X", "importtime", "-c", "import flows.overlap_flow"]
    runs = []
    for _ in range(repeats):
        run = measured(argv, env, cwd=checkout)
        last = [ln for ln in run["output"].splitlines() if ln.endswith("| flows.overlap_flow")]
        run["import_s"] = int(last[-1].split("|")[1]) / 1e6
        runs.append(run)
    return summary(runs)


def rerun_and_floor(repeats: int, scratch: Path) -> dict[str, Any]:
    """(a) warm synthetic runs and (b) cached ten-task flows, interleaved."""
    # INFO logs in both (their cost is Prefect's): the warm run's log shows every stage Cached
    logs = {**os.environ, "PREFECT_LOGGING_LEVEL": "INFO"}
    run_env = prefect_env(scratch / "run-home", {**logs, "PYTHONPATH": str(ROOT)})
    floor_env = prefect_env(scratch / "floor-home", logs)
    overlap = [sys.executable, "-m", "flows.cli", "run", "--dataset", "synthetic"]
    overlap += ["--out", str(scratch / "out"), "--data-dir", str(scratch / "data")]
    floor_file = scratch / "floor_flow.py"
    floor_file.write_text(FLOOR_FLOW)
    floor = [sys.executable, str(floor_file)]
    cold = measured(overlap, run_env)  # fills the output root and the cache
    measured(floor, floor_env)
    warm, empty = [], []
    for _ in range(repeats):
        warm.append(measured(overlap, run_env))
        empty.append(measured(floor, floor_env))
    cached = sum("state Cached" in line for line in warm[-1]["output"].splitlines())
    return {
        "cold_wall_s": cold["wall_s"],
        "warm": summary(warm),
        "floor": summary(empty),
        "warm_runs": [{k: v for k, v in r.items() if k != "output"} for r in warm],
        "floor_runs": [{k: v for k, v in r.items() if k != "output"} for r in empty],
        "warm_cached_lines": cached,
    }


def base_checkout(commit: str, path: Path) -> tuple[Path, bool]:
    """A worktree of ``commit`` at ``path`` (made if absent); True when made here."""
    if path.exists():
        return path, False
    subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT, check=True)
    return path, True


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default="28b2846", help="commit measured as 'before'")
    parser.add_argument("--base-tree", type=Path, default=Path("/tmp/base-wt"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="default benchmarks/out/")
    return parser.parse_args()


def main() -> None:
    """Measure (c), then (a) and (b); print the figures and write them as JSON."""
    args = parse_args()
    base, made = base_checkout(args.base, args.base_tree)
    try:
        imports = {
            "before": import_cost(base, args.repeats),
            "after": import_cost(ROOT, args.repeats),
        }
    finally:
        if made:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
    for when, cost in imports.items():
        print(
            f"import flows.overlap_flow, {when}: {cost['import_s']:.2f} s import time, "
            f"{cost['wall_s']:.2f} s wall, {cost['peak_rss_mib']:.0f} MiB peak"
        )
    with tempfile.TemporaryDirectory(prefix="rerun-floor-") as scratch:
        runs = rerun_and_floor(args.repeats, Path(scratch))
    warm, floor = runs["warm"], runs["floor"]
    print(f"cold synthetic run (not timed for the ratio): {runs['cold_wall_s']:.1f} s")
    for name, m in (("warm overlap run", warm), ("Prefect floor (10 cached tasks)", floor)):
        print(
            f"{name}: {m['wall_s']:.2f} s wall, {m['cpu_s']:.2f} s CPU, "
            f"{m['peak_rss_mib']:.0f} MiB peak (median of {args.repeats})"
        )
    print(
        f"warm / floor: {warm['wall_s'] / floor['wall_s']:.2f}x wall (target <= 1.15x), "
        f"{warm['cpu_s'] / floor['cpu_s']:.2f}x CPU; warm peak {warm['peak_rss_mib']:.0f} MiB "
        "(target <= 400 MB)"
    )
    record = {"environment": environment(), "base": args.base, "imports": imports, **runs}
    print(f"written: {write_json('rerun_floor', record, args.json)}")


if __name__ == "__main__":
    main()
