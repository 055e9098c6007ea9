"""Peak memory of loading and embedding an image folder of N and 10N images, a process each."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import environment, prefect_env, write_json

CLASSES = 4


def make_folder(root: Path, count: int, px: int, seed: int) -> Path:
    """``count`` PNGs of smooth noisy colour fields in ``CLASSES`` class sub-folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index in range(count):
        folder = root / f"class_{index % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.random((4, 4, 3))
        field = np.kron(coarse, np.ones((px // 4, px // 4, 1)))
        pixels = np.clip(field + rng.normal(0, 0.05, field.shape), 0, 1)
        Image.fromarray((pixels * 255).astype(np.uint8)).save(folder / f"{index:06d}.png")
    return root


def peak_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(folder: str, out: str, shard_size: str) -> None:
    """Run the load and extract stages under a flow; print peak memory before and after."""
    import torch
    from prefect import flow

    from flows.config import RunConfig
    from tasks.embeddings import embeddings_task
    from tasks.images import images_task

    torch.zeros(1) @ torch.zeros(1)  # load the math libraries before the baseline
    config = RunConfig(
        dataset=f"imagefolder:{folder}",
        out=out,
        model="vit_tiny_patch16_224",
        pretrained=False,
        image_size=64,
        batch_size=64,
        shard_size=int(shard_size),
    )

    @flow(name="memory-benchmark")
    def stages() -> None:
        images = images_task(config.params.images)
        embeddings_task(images, config.params.embeddings)

    baseline = peak_mib()
    start = time.perf_counter()
    stages()
    print(
        json.dumps(
            {
                "baseline_mib": baseline,
                "peak_mib": peak_mib(),
                "seconds": time.perf_counter() - start,
            }
        )
    )


def measure(folder: Path, out: Path, shard_size: int, env: dict[str, str]) -> dict[str, Any]:
    """Run the child in a fresh interpreter; its last output line is the JSON record."""
    command = [sys.executable, __file__, "--child", str(folder), str(out), str(shard_size)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"child failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=300, help="the 1x count")
    parser.add_argument("--factor", type=int, default=10, help="the larger run's multiple")
    parser.add_argument("--px", type=int, default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    # Memory is bounded by one shard, so both sizes must span several shards to show streaming.
    parser.add_argument("--shard-size", type=int, default=100, help="images per shard")
    parser.add_argument(
        "--child", nargs=3, metavar=("FOLDER", "OUT", "SHARD"), help=argparse.SUPPRESS
    )
    parser.add_argument("--json", type=Path, default=None, help="default benchmarks/out/")
    return parser.parse_args()


def main() -> None:
    """Make both folders, measure each in its own process, print peak memory side by side."""
    args = parse_args()
    if args.child:
        child(*args.child)
        return
    scratch = Path(tempfile.mkdtemp(prefix="overlap-memory-"))
    env = {**prefect_env(scratch / "prefect-home", os.environ), "HF_HUB_OFFLINE": "1"}
    results = {}
    for count in (args.images, args.factor * args.images):
        folder = make_folder(scratch / f"images-{count}", count, args.px, args.seed)
        size = sum(f.stat().st_size for f in folder.rglob("*.png")) / 2**20
        results[count] = {
            "png_mib": size,
            **measure(folder, scratch / f"out-{count}", args.shard_size, env),
        }
        row = results[count]
        print(
            f"{count:6d} images ({size:6.1f} MiB of PNG): peak RSS {row['peak_mib']:7.1f} MiB, "
            f"{row['peak_mib'] - row['baseline_mib']:6.1f} MiB above the imports, "
            f"{row['seconds']:.1f} s",
            flush=True,
        )
    small, large = results[args.images], results[args.factor * args.images]
    growth = (large["peak_mib"] - large["baseline_mib"]) / max(
        small["peak_mib"] - small["baseline_mib"], 1e-9
    )
    print(f"{args.factor}x the images: peak above the imports grows {growth:.2f}x")
    record = {
        "command": "python benchmarks/memory.py " + " ".join(sys.argv[1:]),
        "px": args.px,
        "shard_size": args.shard_size,
        "factor": args.factor,
        "results": results,
        "growth_above_imports": growth,
        "environment": environment(),
    }
    print("wrote", write_json("memory", record, args.json))


if __name__ == "__main__":
    main()
