"""Class similarity and neighbour search on CIFAR-100-sized embeddings: FAISS against numpy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
from common import environment, median, timed, write_json

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


def knn(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row's k nearest other rows by cosine (IndexFlatIP; all GPUs when present)."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    if faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(vectors)
    return index.search(vectors, k + 1)  # the first hit is the row itself


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
    seconds: dict[str, list[float]] = {"faiss_stage": [], "numpy": []}
    for _ in range(args.rounds):
        ours, elapsed = timed(lambda: project_similarity(tables, names))
        seconds["faiss_stage"].append(elapsed)
        reference, elapsed = timed(lambda: numpy_similarity(vectors, labels, args.classes))
        seconds["numpy"].append(elapsed)
    knn_rows = args.knn_rows or args.rows
    (_scores, neighbours), knn_s = timed(lambda: knn(vectors[:knn_rows], args.k))
    self_first = float(np.mean(neighbours[:, 0] == np.arange(knn_rows)))
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
            "gpus": faiss.get_num_gpus(),
            "faiss_threads": faiss.omp_get_max_threads(),
            "self_is_first_hit": self_first,
        },
        "environment": environment(),
    }
    sim = record["similarity_s"]
    print(
        f"{args.rows} x {args.dim} embeddings, {args.classes} classes, median of {args.rounds}\n"
        f"  centroids + class similarity, project (FAISS, streamed shards, table): "
        f"{sim['faiss_stage']:.3f} s\n"
        f"  numpy reference: {sim['numpy']:.3f} s; max |difference| "
        f"{record['similarity_max_abs_diff']:.2e}\n"
        f"  kNN k={args.k} over {knn_rows} rows (FAISS IndexFlatIP, {faiss.get_num_gpus()} GPU, "
        f"{faiss.omp_get_max_threads()} threads): {knn_s:.1f} s "
        f"({knn_rows / knn_s:.0f} queries/s); self is first hit for {self_first:.1%}"
    )
    print("wrote", write_json("similarity", record, args.json))


if __name__ == "__main__":
    main()
