"""Class similarity and neighbour search on CIFAR-100-sized embeddings: project against numpy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from common import environment, median, timed, write_json

from tasks.algorithms import neighbours as nb
from tasks.algorithms.centroids import cosine_matrix, similarity_table, stream_centroids
from tasks.models.embedding_shards import embeddings_table

SHARD_ROWS = 8192


def synthetic_embeddings(
    rows: int, dim: int, classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unit float32 vectors in ``classes`` noisy clusters, and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    labels = np.arange(rows) % classes
    vectors = centres[labels] + rng.normal(0, 2.0, size=(rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, labels


def shards(vectors: np.ndarray, labels: np.ndarray) -> list[pa.Table]:
    """The vectors as embeddings-table shards (sample_id, label, embedding), as stored."""
    tables = []
    for start in range(0, len(vectors), SHARD_ROWS):
        part = vectors[start : start + SHARD_ROWS]
        keys = pa.table(
            {
                "sample_id": np.arange(start, start + len(part), dtype=np.int64),
                "label": labels[start : start + len(part)].astype(np.int32),
            }
        )
        tables.append(embeddings_table(keys, part))
    return tables


def project_similarity(tables: list[pa.Table], names: list[str]) -> np.ndarray:
    """The class-similarity stage's computation: streamed centroids, FAISS cosine, the table."""
    centroids, _ = stream_centroids(iter(tables), names)
    cosine = cosine_matrix(centroids)
    similarity_table(cosine, names)
    return cosine


def numpy_similarity(vectors: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """Reference: per-class mean of unit rows with np.add.at, normalised, then C @ C.T."""
    sums = np.zeros((classes, vectors.shape[1]))
    np.add.at(sums, labels, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    centroids = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    return centroids @ centroids.T


def knn(vectors: np.ndarray, k: int) -> nb.Knn:
    """Every row's k nearest other rows by cosine, as the neighbours stage finds them (exact: in
    torch on a GPU, FAISS on a CPU)."""
    shards = [vectors[i : i + SHARD_ROWS] for i in range(0, len(vectors), SHARD_ROWS)]
    return nb.knn(lambda: iter(shards), len(vectors), vectors.shape[1], k)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the similarity timing")
    parser.add_argument("--knn-rows", type=int, default=None, help="kNN over fewer rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="default benchmarks/out/")
    return parser.parse_args()


def main() -> None:
    """Time the similarity stage against numpy (interleaved), then one all-rows kNN search."""
    args = parse_args()
    vectors, labels = synthetic_embeddings(args.rows, args.dim, args.classes, args.seed)
    tables, names = shards(vectors, labels), [f"class_{i}" for i in range(args.classes)]
    seconds: dict[str, list[float]] = {"project_stage": [], "numpy": []}
    for _ in range(args.rounds):
        ours, elapsed = timed(lambda: project_similarity(tables, names))
        seconds["project_stage"].append(elapsed)
        reference, elapsed = timed(lambda: numpy_similarity(vectors, labels, args.classes))
        seconds["numpy"].append(elapsed)
    knn_rows = args.knn_rows or args.rows
    found, knn_s = timed(lambda: knn(vectors[:knn_rows], args.k))
    self_left_out = bool((found.neighbours.positions != np.arange(knn_rows)[:, None]).all())
    record: dict[str, Any] = {
        "command": "python benchmarks/similarity.py " + " ".join(sys.argv[1:]),
        "rows": args.rows,
        "dim": args.dim,
        "classes": args.classes,
        "similarity_s": {name: median(times) for name, times in seconds.items()},
        "similarity_max_abs_diff": float(np.abs(ours - reference).max()),
        "knn": {
            "rows": knn_rows,
            "k": args.k,
            "seconds": knn_s,
            "queries_per_s": knn_rows / knn_s,
            "kind": found.kind,
            "gpu": torch.cuda.is_available(),
            "torch_threads": torch.get_num_threads(),
            "self_left_out": self_left_out,
        },
        "environment": environment(),
    }
    sim = record["similarity_s"]
    print(
        f"{args.rows} x {args.dim} embeddings, {args.classes} classes, median of {args.rounds}\n"
        f"  centroids + class similarity, project (streamed shards, table): "
        f"{sim['project_stage']:.3f} s\n"
        f"  numpy reference: {sim['numpy']:.3f} s; max |difference| "
        f"{record['similarity_max_abs_diff']:.2e}\n"
        f"  kNN k={args.k} over {knn_rows} rows ({found.kind}: "
        f"{'torch on the GPU' if torch.cuda.is_available() else 'FAISS on the CPU'}): "
        f"{knn_s:.1f} s ({knn_rows / knn_s:.0f} queries/s); each row itself left out: "
        f"{self_left_out}"
    )
    print("wrote", write_json("similarity", record, args.json))


if __name__ == "__main__":
    main()
