"""Load-stage time and bytes written: image folder vs Parquet vs WebDataset, threads vs Dask.

The same N small images (32 x 32 PNG, C classes) are written as an image folder, as Hugging Face
Parquet files and as WebDataset tars; the images stage then loads each source under a fresh
``--out`` on the threads runner and on a local Dask cluster of 2 workers. Recorded per run: the
stage's wall time (inside the flow, so the cluster's start is not counted), the bytes under
``--out`` (outputs only, Prefect's records left out) and the rows.

    python benchmarks/load_sources.py --images 20000 --classes 100
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from common import environment, prefect_env, write_json
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_images(n: int, classes: int, seed: int = 0) -> list[tuple[int, bytes]]:
    """(label, PNG bytes) of ``n`` random 32 x 32 images, labels round-robin."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
        out.append((i % classes, buffer.getvalue()))
    return out


def write_sources(root: Path, images: list[tuple[int, bytes]], classes: int, shards: int) -> dict:
    """The same images as ``imagefolder:``, ``parquet:`` and ``webdataset:`` datasets."""
    names = [f"class_{c:03d}" for c in range(classes)]
    for i, (label, data) in enumerate(images):
        path = root / "folder" / names[label] / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    image_type = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
    (root / "parquet").mkdir()
    (root / "wds").mkdir()
    for shard, part in enumerate(np.array_split(np.arange(len(images)), shards)):
        rows = [images[i] for i in part]
        table = pa.table(
            {
                "image": pa.array(
                    [
                        {"bytes": d, "path": f"{i:06d}.png"}
                        for i, (_, d) in zip(part, rows, strict=True)
                    ],
                    image_type,
                ),
                "label": pa.array([label for label, _ in rows], pa.int64()),
            }
        ).replace_schema_metadata(metadata)
        pq.write_table(table, root / "parquet" / f"train-{shard:05d}-of-{shards:05d}.parquet")
        with tarfile.open(root / "wds" / f"train-{shard:06d}.tar", "w") as tar:
            for i, (label, data) in zip(part, rows, strict=True):
                for suffix, content in (("png", data), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"{i:06d}.{suffix}")
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
    last = f"{shards - 1:06d}"
    return {
        "imagefolder": f"imagefolder:{root / 'folder'}",
        "parquet": f"parquet:{root / 'parquet'}",
        "webdataset": f"webdataset:{root / 'wds'}/train-{{000000..{last}}}.tar",
    }


def bytes_under(folder: Path, skip: str | None = None) -> int:
    """Total size of the files under ``folder``, leaving out any sub-folder named ``skip``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and skip not in p.parts)


def load_once(dataset: str, out: Path, runner: str, shard_size: int) -> dict[str, Any]:
    """Run only the images stage of ``dataset`` on ``runner``; its time, rows and bytes."""
    from prefect import flow

    from flows import runners
    from flows.config import RunConfig
    from tasks.images import images

    config = RunConfig(
        dataset=dataset, out=str(out), runner=runner, workers=2, shard_size=shard_size
    )

    @flow(name="load-benchmark", validate_parameters=False)
    def load_only(config: Any) -> dict[str, Any]:
        start = time.perf_counter()
        manifest = images(config.params.images, on_cluster=runners.on_cluster(config))
        return {"stage_s": time.perf_counter() - start, "rows": manifest.info["rows"]}

    state = runners.configured(load_only, config)(config, return_state=True)
    result = state.result()
    return {
        **result,
        **index_task_times(state.state_details.flow_run_id),
        "bytes_written": bytes_under(out, runners.RESULTS_FOLDER),
    }


def index_task_times(flow_run_id: Any) -> dict[str, Any]:
    """How many ``index N`` tasks ran and their run times summed (the work, without the
    workers' start and Prefect's bookkeeping between tasks)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    index = [r for r in runs if r.name.startswith("index ")]
    return {
        "index_tasks": len(index),
        "index_task_s": sum(r.total_run_time.total_seconds() for r in index),
    }


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--shards", type=int, default=10, help="Parquet files and tars")
    parser.add_argument("--runners", nargs="*", default=["threads", "dask"])
    parser.add_argument("--json", type=Path, default=None, help="default benchmarks/out/")
    return parser.parse_args()


def main() -> None:
    """Write the sources once, load each on each runner, print and save the figures."""
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="load-sources-") as tmp:
        root = Path(tmp)
        os.environ.update(prefect_env(root / "prefect", os.environ))
        start = time.perf_counter()
        datasets = write_sources(
            root, make_images(args.images, args.classes), args.classes, args.shards
        )
        print(f"sources written in {time.perf_counter() - start:.1f} s", flush=True)
        source_bytes = {
            kind: bytes_under(root / folder)
            for kind, folder in (
                ("imagefolder", "folder"),
                ("parquet", "parquet"),
                ("webdataset", "wds"),
            )
        }
        runs = []
        shard_size = args.images // args.shards  # the image folder in as many shards
        for runner in args.runners:
            for kind, dataset in datasets.items():
                out = root / "out" / f"{kind}-{runner}"
                result = load_once(dataset, out, runner, shard_size)
                runs.append({"source": kind, "runner": runner, **result})
                print(
                    f"{kind:11s} {runner:7s} {result['stage_s']:7.1f} s "
                    f"({result['index_tasks']} index tasks, {result['index_task_s']:.1f} s) "
                    f"{result['bytes_written'] / 2**20:8.1f} MiB written "
                    f"({result['rows']} rows)",
                    flush=True,
                )
    record = {
        "benchmark": "load_sources",
        "images": args.images,
        "classes": args.classes,
        "source_shards": args.shards,
        "source_bytes": source_bytes,
        "runs": runs,
        "environment": environment(),
    }
    print("written to", write_json("load_sources", record, args.json))


if __name__ == "__main__":
    main()
