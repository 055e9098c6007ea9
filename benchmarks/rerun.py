"""Re-run cost, three parts (``--parts``), each printed as figures side by side in one run.

- ``threshold``: the synthetic flow cold, warm, then with only the confusion threshold changed.
- ``grow``: an image folder of ``--images`` PNGs run once; then +10% new images re-run under the
  same ``--out`` against a from-scratch run of the grown folder (extraction time and whole wall);
  then 5% of the images moved to another class (relabelled): how many were embedded again.
- ``load``: the images stage over a folder of ``--load-files`` PNGs: the first load, the same
  folder unchanged, one file added (every other file taken from the last load) and one file added
  with ``--rescan`` (every file read again).

    .venv/bin/python benchmarks/rerun.py [--parts threshold grow load] [--images 3000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import environment, prefect_env, write_json
from PIL import Image


def isolate(home: Path) -> None:
    """This process under a private Prefect home (see ``common.prefect_env``)."""
    os.environ.update(prefect_env(home, os.environ))
    os.environ.pop("PREFECT_API_URL", None)


def run_once(config: Any) -> dict[str, Any]:
    """Run the flow; wall time, the flow run's own time, each task's state and the run record."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.overlap_flow import class_overlap

    start = time.perf_counter()
    state = class_overlap(config, return_state=True)
    wall = time.perf_counter() - start
    record = state.result()  # raises if the run failed
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run_id)
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    tasks = {
        r.name.rsplit("-", 1)[0]: {
            "state": r.state.name,
            "seconds": r.total_run_time.total_seconds(),
        }
        for r in sorted(runs, key=lambda r: r.expected_start_time or r.created)
    }
    return {
        "wall_s": wall,
        "flow_run_s": flow_run.total_run_time.total_seconds(),
        "tasks": tasks,
        "changes": record.get("changes", {}),
    }


def print_run(label: str, run: dict[str, Any]) -> None:
    """One run's wall time, task states and (image folders) what changed."""
    states = [task["state"] for task in run["tasks"].values()]
    print(
        f"\n{label}: wall {run['wall_s']:.1f} s, flow run {run['flow_run_s']:.1f} s, "
        f"{states.count('Cached')} cached, {states.count('Completed')} ran"
    )
    if run.get("changes"):
        print("  changes:", ", ".join(f"{n} {k}" for k, n in run["changes"].items()))
    for name, task in run["tasks"].items():
        print(f"  {name:28s} {task['state']:10s} {task['seconds']:7.2f} s")


def threshold_part(scratch: Path, change: list[str]) -> dict[str, Any]:
    """The synthetic flow cold, warm, and with ``change`` (KEY=VALUE) applied."""
    from flows.config import RunConfig

    config = RunConfig(dataset="synthetic", out=str(scratch / "out"), data_dir=str(scratch))
    changes = dict(item.split("=", 1) for item in change)
    changed = RunConfig(**{**config.model_dump(), **changes})
    runs = {
        "cold (fresh home and output, includes server start)": run_once(config),
        "warm (same parameters)": run_once(config),
        f"changed ({', '.join(change)})": run_once(changed),
    }
    for label, run in runs.items():
        print_run(label, run)
    return runs


# -- an image folder that grows ------------------------------------------------------------------


def write_images(folder: Path, classes: int, count: int, start: int, size: int = 32) -> None:
    """``count`` PNGs spread over ``classes`` class folders, numbered from ``start``.

    Each class has its own mean colour and stripe frequency, plus per-image noise: the classes
    are separable, so every downstream stage has something to find.
    """
    for index in range(start, start + count):
        label = index % classes
        rng = np.random.default_rng(index)
        colour = np.random.default_rng(1000 + label).integers(40, 216, 3)
        stripes = np.sin(np.arange(size) * (label + 1) * np.pi / size)[:, None, None] * 30
        pixels = colour + stripes + rng.normal(0, 25, (size, size, 3))
        path = folder / f"class_{label:02d}" / f"img_{index:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


def relabel(folder: Path, share: float, seed: int = 0) -> int:
    """Move ``share`` of the images into the next class's folder; return how many moved."""
    files = sorted(folder.glob("*/*.png"))
    chosen = random.Random(seed).sample(files, round(share * len(files)))
    classes = sorted(p.name for p in folder.iterdir())
    for path in chosen:
        target = classes[(classes.index(path.parent.name) + 1) % len(classes)]
        shutil.move(path, folder / target / f"moved_{path.name}")
    return len(chosen)


def folder_config(folder: Path, out: Path, args: argparse.Namespace) -> Any:
    """The run over ``folder``: the default model's architecture with random weights."""
    from flows.config import RunConfig

    return RunConfig(
        dataset=f"imagefolder:{folder}",
        out=str(out),
        model=args.model,
        pretrained=False,
        image_size=args.image_size,
        overlap_rule="topk",
        overlap_classes=4,
        device="cpu",
    )


def extraction_s(run: dict[str, Any]) -> float:
    return run["tasks"]["embeddings"]["seconds"]


def grow_part(scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    """N images, then +10% under the same --out against from scratch, then 5% relabelled."""
    folder = scratch / "folder"
    added = args.images // 10
    write_images(folder, args.classes, args.images, start=0)
    runs = {"first": run_once(folder_config(folder, scratch / "out", args))}
    write_images(folder, args.classes, added, start=args.images)
    runs["grown"] = run_once(folder_config(folder, scratch / "out", args))
    runs["scratch"] = run_once(folder_config(folder, scratch / "scratch-out", args))
    moved = relabel(folder, 0.05)
    runs["relabelled"] = run_once(folder_config(folder, scratch / "out", args))
    labels = {
        "first": f"first run, {args.images} images",
        "grown": f"+{added} new images, re-run under the same --out",
        "scratch": f"from scratch over the grown folder ({args.images + added} images)",
        "relabelled": f"{moved} images (5%) moved to another class, re-run",
    }
    for name, run in runs.items():
        print_run(labels[name], run)
    grown, fresh = runs["grown"], runs["scratch"]
    summary = {
        "extraction_ratio": extraction_s(grown) / extraction_s(fresh),
        "wall_ratio": grown["wall_s"] / fresh["wall_s"],
        "relabelled_embedded": runs["relabelled"]["changes"].get("embedded"),
        "moved": moved,
    }
    print(
        f"\n+10% images: extraction {extraction_s(grown):.1f} s against {extraction_s(fresh):.1f} s"
        f" from scratch = {summary['extraction_ratio']:.3f}x; whole run {grown['wall_s']:.1f} s"
        f" against {fresh['wall_s']:.1f} s = {summary['wall_ratio']:.3f}x"
    )
    print(f"5% relabelled ({moved} images): {summary['relabelled_embedded']} embedded again")
    return {"runs": runs, "labels": labels, "summary": summary}


# -- loading an unchanged folder -----------------------------------------------------------------


def timed_load(folder: Path, out: Path, rescan: bool = False) -> dict[str, Any]:
    """The images stage's body (no Prefect task run): seconds and what it says changed."""
    from prefect.logging import disable_run_logger

    from flows.config import RunConfig
    from tasks.images import images_task

    params = RunConfig(dataset=f"imagefolder:{folder}", out=str(out), rescan=rescan)
    start = time.perf_counter()
    with disable_run_logger():
        manifest = images_task.fn(params.params.images)
    return {"seconds": time.perf_counter() - start, "files": manifest.info.get("files")}


def load_part(scratch: Path, args: argparse.Namespace) -> dict[str, Any]:
    """First load of ``--load-files`` files against unchanged, +1 file, +1 file with --rescan."""
    folder, out = scratch / "load-folder", scratch / "load-out"
    write_images(folder, args.classes, args.load_files, start=0)
    loads = {"first load (every file read)": timed_load(folder, out)}
    loads["same folder again (the stage's folder is complete)"] = timed_load(folder, out)
    write_images(folder, args.classes, 1, start=args.load_files)
    loads["one file added (the others from the last load)"] = timed_load(folder, out)
    write_images(folder, args.classes, 1, start=args.load_files + 1)
    loads["one more file added, --rescan (every file read)"] = timed_load(folder, out, True)
    first = next(iter(loads.values()))["seconds"]
    print(f"\nload of a folder of {args.load_files} files:")
    for label, load in loads.items():
        files = load["files"] or {}
        detail = ", ".join(f"{n} {k}" for k, n in files.items())
        if label.startswith("same folder"):  # the stored manifest's counts, of the first load
            detail = "nothing read: the first load's table is complete"
        print(f"  {label:52s} {load['seconds']:7.2f} s  {load['seconds'] / first:6.3f}x  {detail}")
    return loads


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--parts", nargs="+", choices=["threshold", "grow", "load"], default=["grow", "load"]
    )
    parser.add_argument(
        "--change",
        nargs="*",
        default=["confusion_rule=sigma", "confusion_k=1"],
        help="threshold: KEY=VALUE settings of the third run",
    )
    parser.add_argument("--images", type=int, default=3000, help="grow: images before growing")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--model", default="vit_small_patch16_224", help="grow: random weights")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--load-files", type=int, default=10_000)
    parser.add_argument("--json", type=Path, default=None, help="default benchmarks/out/")
    return parser.parse_args()


def main() -> None:
    """The parts asked for, in one process with a fresh Prefect home and output roots."""
    args = parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="overlap-rerun-"))
    isolate(scratch / "prefect-home")
    record: dict[str, Any] = {"command": "python benchmarks/rerun.py " + " ".join(sys.argv[1:])}
    if "threshold" in args.parts:
        record["threshold"] = threshold_part(scratch / "threshold", args.change)
    if "grow" in args.parts:
        record["grow"] = grow_part(scratch / "grow", args)
    if "load" in args.parts:
        record["load"] = load_part(scratch / "load", args)
    record.update(scratch=str(scratch), environment=environment())
    print("\nwrote", write_json("rerun", record, args.json))


if __name__ == "__main__":
    main()
