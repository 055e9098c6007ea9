"""Bootstrap cost: Poisson bootstrap of class centroids against extracting the same images.

Times the overlap stage's bootstrap (weighted class sums over the shards, then every resample's
cosines and flags under the rule) on CIFAR-100-sized embeddings, and the project's extractor on
a small batch of images in the same run, alternating, so both see the same machine load. The
figure is bootstrap seconds / (rows / extraction img/s): the share of the extraction's time.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from common import environment, median, timed, write_json
from similarity import synthetic_embeddings

from flows.config import RunConfig
from tasks.algorithms.bootstrap import bootstrap_class_sums, pair_stability, tracked_pairs
from tasks.algorithms.calibration import apply_rule
from tasks.algorithms.centroids import cosine_matrix, neighbour_ranks
from tasks.models.extractor import build_extractor
from tasks.sources import encode_png

SHARD_ROWS = 8192


def bootstrap(
    vectors: np.ndarray, labels: np.ndarray, classes: int, resamples: int, rule: dict[str, Any]
) -> float:
    """The stage's bootstrap from shards to flag rates; returns the mean flag rate (a check)."""
    ids = np.arange(len(vectors), dtype=np.int64)
    parts = [slice(s, s + SHARD_ROWS) for s in range(0, len(vectors), SHARD_ROWS)]
    shards = [(ids[part], labels[part], vectors[part]) for part in parts]
    sums = bootstrap_class_sums(iter(shards), classes, resamples=resamples, seed=0)
    centroids = sums.sums.sum(axis=1)  # any centroids do for choosing the tracked pairs
    cosine = cosine_matrix(centroids / np.linalg.norm(centroids, axis=1, keepdims=True))
    cosine = cosine.astype(np.float64)
    np.fill_diagonal(cosine, np.nan)
    flagged = apply_rule(cosine, neighbour_ranks(cosine), **rule).pairs
    stability = pair_stability(sums, tracked_pairs(cosine, flagged), rule)
    return float(stability.flagged.mean())


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="vit_small_patch16_224", help="extraction model")
    parser.add_argument("--extract-images", type=int, default=64, help="images timed per round")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="default benchmarks/out/")
    return parser.parse_args()


def main() -> None:
    """Alternate a bootstrap and a small extraction per round; print medians and the ratio."""
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    vectors, labels = synthetic_embeddings(args.rows, args.dim, args.classes, args.seed)
    rule = {"rule": "sigma", "k": 3.0}
    config = RunConfig(
        dataset="cifar100", model=args.model, pretrained=False, batch_size=args.batch_size
    )
    # random-init weights: the same work as pretrained ones
    extractor = build_extractor(config.params.embeddings)
    rng = np.random.default_rng(args.seed)
    images = rng.integers(0, 256, size=(args.extract_images, 32, 32, 3), dtype=np.uint8)
    pngs = [encode_png(image) for image in images]
    extractor.embed_encoded(pngs[: args.batch_size])  # warm-up
    seconds: dict[str, list[float]] = {"bootstrap": [], "extract": []}
    for _ in range(args.rounds):
        _, elapsed = timed(lambda: bootstrap(vectors, labels, args.classes, args.resamples, rule))
        seconds["bootstrap"].append(elapsed)
        _, elapsed = timed(lambda: extractor.embed_encoded(pngs))
        seconds["extract"].append(elapsed)
    boot_s = median(seconds["bootstrap"])
    rate = args.extract_images / median(seconds["extract"])
    extraction_s = args.rows / rate
    record: dict[str, Any] = {
        "command": "python benchmarks/bootstrap.py " + " ".join(sys.argv[1:]),
        "rows": args.rows,
        "dim": args.dim,
        "classes": args.classes,
        "resamples": args.resamples,
        "rule": rule,
        "bootstrap_s": seconds["bootstrap"],
        "extract_model": args.model,
        "extract_precision": extractor.precision,
        "extract_img_per_s": rate,
        "extraction_s_for_rows": extraction_s,
        "share_of_extraction": boot_s / extraction_s,
        "environment": environment(),
    }
    print(
        f"{args.rows} x {args.dim} embeddings, {args.classes} classes, {args.resamples} resamples, "
        f"median of {args.rounds}\n"
        f"  bootstrap (class sums over shards + every resample's cosines and flags): "
        f"{boot_s:.2f} s\n"
        f"  extraction ({args.model}, {extractor.precision}, {extractor.device}): {rate:.1f} img/s"
        f", so {extraction_s:.0f} s for {args.rows} images\n"
        f"  bootstrap / extraction: {boot_s / extraction_s:.2%}"
    )
    print("wrote", write_json("bootstrap", record, args.json))


if __name__ == "__main__":
    main()
