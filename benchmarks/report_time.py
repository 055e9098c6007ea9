"""Where the report stage's wall time goes, on a finished run: its tables, figures, explorer page.

Runs the report stage's work (read the run's tables, draw every figure, build explorer.html) on
the stages a run record names, each time in a new process (numba compiles UMAP afresh, as in a
cold run), and writes nothing next to the run. With ``--base COMMIT`` the same in a copy of that
commit (``git archive``), interleaved with this checkout, ``--rounds`` each: a side-by-side ratio.

    PYTHONPATH=. .venv/bin/python benchmarks/report_time.py RUN_RECORD [--base COMMIT] [--rounds 1]

RUN_RECORD: ``<out>/runs/<time>-<id>.json`` of a finished run (its stages must still exist).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from common import environment, median, write_json

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("tables", "figures", "explorer")


def report_inputs(record_path: Path) -> tuple[Any, Any, Any]:
    """(stages, report parameters, run configuration) of the run ``record_path`` names, as the
    checkout this process imports wants them: ``RunStages`` and ``config.params.report``, or for
    a base commit that predates them, a mapping of manifests and ``config.params_of``."""
    from flows.config import RunConfig
    from storage.finished_run import open_run

    record = json.loads(record_path.read_text())  # as written, whichever checkout wrote it
    run = open_run(str(record_path))
    manifests = {name: run.manifest(name) for name in record["stages"] if name != "report"}
    config = RunConfig(**record["params"])
    try:
        from tasks.core.results import RunStages
    except ImportError:  # a commit before the typed stage contracts
        from tasks.core.params import ReportParams

        return manifests, config.params_of(ReportParams), config
    return RunStages(**manifests), config.params.report, config


def time_report(record_path: Path) -> dict[str, float]:
    """Seconds of each part of the report's work on the run ``record_path`` names."""
    from tasks import report
    from tasks.reporting import report_data

    stages, params, config = report_inputs(record_path)
    laps = [time.perf_counter()]
    tables = report_data.read_run_tables(stages)
    laps.append(time.perf_counter())
    report.run_blocks(stages, tables, params, config.model_dump(mode="json"))
    laps.append(time.perf_counter())
    report.explorer_page(stages, tables, params)
    laps.append(time.perf_counter())
    seconds = {part: round(b - a, 2) for part, a, b in zip(PARTS, laps[:-1], laps[1:], strict=True)}
    return {**seconds, "report": round(laps[-1] - laps[0], 2)}


def in_new_process(checkout: Path, record_path: Path, home: Path) -> dict[str, float]:
    """``time_report`` in a fresh interpreter that imports the code of ``checkout``
    (``home``: a private Prefect home; the report's work needs no server)."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "PREFECT_HOME": str(home)}
    script = Path(__file__).resolve()
    out = subprocess.run(
        [sys.executable, str(script), "--child", str(record_path)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"the report's work failed in {checkout}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def archive(commit: str, into: Path) -> Path:
    """A plain copy of ``commit``'s tree (no worktree: nothing recorded in the repository)."""
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryFile() as file:
        file.write(tar)
        file.seek(0)
        with tarfile.open(fileobj=file) as tree:
            tree.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("record", type=Path, help="a finished run's record (<out>/runs/*.json)")
    parser.add_argument("--base", help="also time this commit, interleaved")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_report(args.record)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkouts = {"this": ROOT}
        if args.base:
            checkouts["base"] = archive(args.base, Path(tmp) / "base")
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
        for _ in range(args.rounds):
            for name, checkout in checkouts.items():
                load = os.getloadavg()[0]
                runs[name].append(
                    {**in_new_process(checkout, args.record, Path(tmp) / "prefect"), "load": load}
                )
                print(name, json.dumps(runs[name][-1]), flush=True)
    summary = {
        name: {part: median([r[part] for r in rows]) for part in (*PARTS, "report")}
        for name, rows in runs.items()
    }
    print(json.dumps(summary, indent=1))
    write_json("report_time", {"environment": environment(), "runs": runs, "median": summary})


if __name__ == "__main__":
    main()
