"""kNN over all embeddings (60k x 384 by default): the project's exact torch search ("flat")
against FAISS's exact index ("faiss-flat"), HNSW and IVF, with recall.

Runs the project's own functions (``tasks.algorithms.neighbours``) on clustered unit vectors fed
as shards, so the streaming path is what is timed. The kinds run in turn, ``--rounds`` times
(rotating who goes first), so their ratio holds under a changing load. Exact kinds are checked
against each other; recall@k of each approximate index is measured against exact search on a
sample of queries, as the stage does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from common import environment, timed, write_json

from tasks.algorithms import neighbours as nb
from tasks.models.hardware import device_name

SHARD_ROWS = 8192


def clustered(rows: int, dim: int, classes: int, spread: float, seed: int) -> np.ndarray:
    """Unit float32 vectors around ``classes`` centres; ``spread`` 1 puts a row at cosine ~0.7 to
    its centre, about what a DINO class looks like around its centroid."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    noise = rng.normal(0, spread, size=(rows, dim)).astype(np.float32)
    vectors = centres[np.arange(rows) % classes] + noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def reader(vectors: np.ndarray) -> nb.ShardReader:
    """The vectors as a re-readable stream of shards."""
    return lambda: (vectors[i : i + SHARD_ROWS] for i in range(0, len(vectors), SHARD_ROWS))


def run_kind(
    vectors: np.ndarray, kind: nb.IndexKind, k: int, sample: int, gpu: bool
) -> tuple[dict[str, Any], nb.Neighbours]:
    """Build time, search time and sampled recall of one index kind over all rows."""
    read, (rows, dim) = reader(vectors), vectors.shape
    cpu_start = time.process_time()  # CPU seconds: what a busy machine's load does not change
    if kind == "flat":  # the project's exact search: no index to build
        found, search_s = timed(lambda: nb.exact_search(read, rows, k, gpu=gpu))
        build_s, recall = 0.0, 1.0
    else:
        index, build_s = timed(lambda: nb.build_index(read, rows, dim, kind))
        found, search_s = timed(lambda: nb.concat(nb.search_shards(index, read, k)))
        recall = 1.0 if kind == "faiss-flat" else nb.sample_recall(found, read, k, size=sample)
    result = {
        "kind": kind,
        "build_s": round(build_s, 2),
        "search_s": round(search_s, 2),
        "total_s": round(build_s + search_s, 2),
        "recall_at_k": round(recall, 4),
        "cpu_s": round(time.process_time() - cpu_start, 2),
        "load_1min": round(os.getloadavg()[0], 2),
    }
    return result, found


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--spread", type=float, default=1.0)
    parser.add_argument("--k", type=int, default=nb.DEFAULT_K)
    parser.add_argument("--sample", type=int, default=nb.RECALL_SAMPLE, help="recall queries")
    parser.add_argument("--kinds", default="flat,faiss-flat", help="also: hnsw, ivf")
    parser.add_argument("--rounds", type=int, default=2, help="turns of every kind")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--nprobe", type=int, default=nb.IVF_NPROBE, help="IVF lists searched")
    parser.add_argument("--ef-search", type=int, default=nb.HNSW_EF_SEARCH, help="HNSW breadth")
    parser.add_argument("--json", type=Path, default=None, help="default benchmarks/out/knn.json")
    return parser.parse_args()


def main() -> int:
    """Time each index kind and print one line per kind."""
    args = parse_args()
    gpu = device_name(args.device) == "cuda"  # where the torch exact search runs
    nb.IVF_NPROBE, nb.HNSW_EF_SEARCH = args.nprobe, args.ef_search
    vectors = clustered(args.rows, args.dim, args.classes, args.spread, seed=0)
    print(f"{args.rows} x {args.dim}, k={args.k}, faiss threads {faiss.omp_get_max_threads()}")
    kinds = args.kinds.split(",")
    results, found = [], {}
    for round_ in range(args.rounds):
        turn = round_ % len(kinds)
        for kind in kinds[turn:] + kinds[:turn]:
            result, found[kind] = run_kind(vectors, kind, args.k, args.sample, gpu)  # type: ignore[arg-type]
            print({"round": round_ + 1, **result}, flush=True)
            results.append({"round": round_ + 1, **result})
    exact = [kind for kind in ("flat", "faiss-flat") if kind in found]
    same = None
    if len(exact) == 2:
        a, b = found["flat"], found["faiss-flat"]
        same = float(np.mean(a.positions == b.positions))
        gap = float(np.abs(a.cosine - b.cosine).max())
        print(
            f"flat vs faiss-flat: same neighbour in {same:.6f} of places, max |cos| gap {gap:.2e}"
        )
    brute = None
    if "flat" in found:  # the torch search against an fp32 brute force (ties by position)
        rows = nb.sample_rows(args.rows, args.sample)
        read = reader(vectors)
        truth = nb.exact_neighbours(rows, nb.gather(read, rows), read, args.k)
        brute = float(np.mean(found["flat"].positions[rows] == truth.positions))
        print(f"flat vs brute force, {len(rows)} sampled rows: same neighbour in {brute} of places")
    by_kind = {k: [r["total_s"] for r in results if r["kind"] == k] for k in kinds}
    if "flat" in by_kind and "faiss-flat" in by_kind:
        ratios = [f / t for f, t in zip(by_kind["faiss-flat"], by_kind["flat"], strict=True)]
        print(f"faiss-flat / flat time per round: {[round(r, 2) for r in ratios]}")
    record = {
        "command": "python benchmarks/knn.py " + " ".join(sys.argv[1:]),
        "args": {key: str(value) for key, value in vars(args).items()},
        "torch_device": "cuda" if gpu else "cpu",
        "results": results,
        "flat_equals_faiss_flat": same,
        "flat_equals_brute_force_sample": brute,
        "environment": environment(),
    }
    print("wrote", write_json("knn", record, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
