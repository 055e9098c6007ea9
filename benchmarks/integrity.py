"""Cost of the cache-hit content check on CIFAR-100-sized outputs, against hashing every byte.

Writes an images stage (60,000 32-px PNGs) and an embeddings stage (384-dim float32) in
8,192-row shards with the project's own writers, records them as a run does, then times
``StageManifest.problems()`` (what every cache hit runs) and ``verify_hashes()`` (every byte,
what ``overlap verify`` does). Run: ``PYTHONPATH=. python benchmarks/integrity.py [DIR]``.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from storage import integrity
from storage.fs import Location
from storage.manifest import StageManifest, record_file
from storage.schemas.images import IMAGES, embeddings_schema
from storage.tables import shard_name, write_parquet

ROWS, DIM, SHARD, CLASSES = 60_000, 384, 8192, 100


def png_pool(rng: np.random.Generator, n: int = 512) -> list[bytes]:
    """Smooth 32-px noise PNGs, about the size of CIFAR's (2-3 kB)."""
    pool = []
    for _ in range(n):
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        buffer = io.BytesIO()
        small.resize((32, 32), Image.BILINEAR).save(buffer, format="PNG")
        pool.append(buffer.getvalue())
    return pool


def shards(rng: np.random.Generator) -> tuple[dict[str, pa.Table], dict[str, pa.Table]]:
    """(images shards, embeddings shards) by file name."""
    pool = png_pool(rng)
    images, embeddings = {}, {}
    for index, low in enumerate(range(0, ROWS, SHARD)):
        ids = np.arange(low, min(low + SHARD, ROWS))
        labels = (ids % CLASSES).astype(np.int32)
        keys = {
            "sample_id": ids,
            "split": ["train"] * len(ids),
            "label": labels,
            "class_name": [f"class-{label}" for label in labels],
        }
        pngs = [{"bytes": pool[i % len(pool)] + bytes([i % 256]), "path": None} for i in ids]
        images[shard_name(index)] = pa.table(
            {**keys, "coarse_label": labels // 5, "coarse_name": ["s"] * len(ids), "image": pngs}
        )
        vectors = rng.standard_normal((len(ids), DIM)).astype(np.float32)
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM)
        embeddings[shard_name(index)] = pa.table({**keys, "embedding": column})
    return images, embeddings


def write_stage(root: Path, name: str, tables: dict[str, pa.Table], schema: pa.Schema) -> Location:
    """Write one stage's shards; return its folder."""
    location = Location(str(root / name))
    for file_name, table in tables.items():
        write_parquet(location, file_name, table, schema)
    return location


def recorded(location: Location) -> StageManifest:
    """A manifest of every shard in ``location``, recorded under the current threshold."""
    files = {n: record_file(location, n) for n in location.listdir() if n.endswith(".parquet")}
    return StageManifest(stage="s", key="k", url=location.url, code_version="c", files=files)


def best_ms(check: Callable[[], list[str]], rounds: int = 3) -> float:
    """Fastest of ``rounds`` runs, in milliseconds; the check must find nothing wrong."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        assert check() == []
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main(root: Path) -> None:
    """Write the outputs under ``root`` and print the timings."""
    images, embeddings = shards(np.random.default_rng(0))
    folders = [
        write_stage(root, "images", images, IMAGES),
        write_stage(root, "embeddings", embeddings, embeddings_schema(DIM)),
    ]
    sizes = [p.stat().st_size for p in root.rglob("*.parquet")]
    print(f"{len(sizes)} files, {sum(sizes) / 1e6:.0f} MB, largest {max(sizes) / 1e6:.1f} MB")
    for limit_mib in (16, 4):
        integrity.FULL_HASH_MAX = limit_mib << 20
        manifests = [recorded(folder) for folder in folders]
        ms = best_ms(lambda ms=manifests: [p for m in ms for p in m.problems()])
        print(f"cache-hit check, files up to {limit_mib} MiB hashed in full: {ms:.0f} ms")
    ms = best_ms(lambda: [p for m in manifests for p in m.verify_hashes()])
    print(f"every byte (overlap verify): {ms:.0f} ms")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as folder:
            main(Path(folder))
