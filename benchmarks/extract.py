"""Extraction speed: the notebook way against the project's extractor, same model, same images."""

from __future__ import annotations

import argparse
import copy
import os
import pickle
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from common import environment, median, sync, timed, write_json
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from flows.config import RunConfig
from tasks.models import fast_vit, models
from tasks.models.extractor import build_extractor
from tasks.sources import encode_png

# Dense bf16 tensor-core peaks (TFLOP/s) for the share-of-peak figure; others: --peak-tflops.
GPU_BF16_PEAK = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


class NotebookCIFAR(Dataset):
    """What torchvision's CIFAR100 does per item: uint8 array -> PIL image -> transform."""

    def __init__(self, images: np.ndarray, transform: Callable[[Image.Image], torch.Tensor]):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(Image.fromarray(self.images[index]))


def load_images(count: int, data_dir: Path | None, seed: int) -> tuple[np.ndarray, str]:
    """N x 32 x 32 x 3 uint8: CIFAR-100 test images when present, else seeded synthetic ones."""
    pickle_path = data_dir / "cifar-100-python" / "test" if data_dir else None
    if pickle_path is not None and pickle_path.is_file():
        with pickle_path.open("rb") as handle:
            data = pickle.load(handle, encoding="bytes")[b"data"]
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(np.resize(images, (count, 32, 32, 3))), "cifar100-test"
    # Smooth random colour fields plus pixel noise: CIFAR-like statistics, not white noise.
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((count, 3, 8, 8), dtype=np.float32))
    smooth = F.interpolate(coarse, size=(32, 32), mode="bilinear").numpy()
    pixels = np.clip(smooth + rng.normal(0, 0.05, smooth.shape), 0, 1)
    images = (pixels * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), f"synthetic smooth fields + noise (seed {seed})"


def model_macs(model: nn.Module, size: int) -> int:
    """Multiply-accumulates per image: Linear/Conv layers counted by hooks, attention by formula.

    Attention adds 2*N^2*D MACs per block (QK^T and AV), which fused kernels hide from counters.
    """
    macs = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features
        elif isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * int(np.prod(module.kernel_size))
            macs += output.numel() * per_output
        elif hasattr(module, "qkv") and hasattr(module, "num_heads"):  # timm Attention
            _, tokens, dim = inputs[0].shape
            macs += 2 * tokens * tokens * dim
        elif isinstance(module, fast_vit.ClassTokenBlock):  # one query row against all tokens
            _, tokens, dim = inputs[0].shape
            macs += 2 * tokens * dim

    counted = nn.Linear | nn.Conv2d | fast_vit.ClassTokenBlock
    probe = [m for m in model.modules() if isinstance(m, counted) or hasattr(m, "qkv")]
    handles = [m.register_forward_hook(count) for m in probe]
    try:
        with torch.inference_mode():
            model.float().cpu()(torch.zeros(1, 3, size, size))
    finally:
        for handle in handles:
            handle.remove()
    return macs


def notebook_loader(images: np.ndarray, prep: models.Preprocessing, args: Any) -> DataLoader:
    """torchvision Compose([Resize(224), ToTensor(), Normalize]) + DataLoader, as in notebooks."""
    mode = transforms.InterpolationMode(args.notebook_interpolation)
    transform = transforms.Compose(
        [
            transforms.Resize(prep.image_size, interpolation=mode),
            transforms.ToTensor(),
            transforms.Normalize(prep.mean, prep.std),
        ]
    )
    return DataLoader(
        NotebookCIFAR(images, transform),
        batch_size=args.batch_size,
        num_workers=args.workers,
        pin_memory=args.device.type == "cuda",
    )


def notebook_embed(model: nn.Module, loader: DataLoader, device: torch.device) -> np.ndarray:
    """fp32 forward under no_grad, batch by batch; L2-normalised like the project's output."""
    out = []
    with torch.no_grad():
        for batch in loader:
            out.append(F.normalize(model(batch.to(device)), dim=1).cpu())
    return torch.cat(out).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Row-wise cosine of two sets of unit vectors: min and mean."""
    values = np.sum(a.astype(np.float64) * b, axis=1)
    return {"min": float(values.min()), "mean": float(values.mean())}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--pretrained", action="store_true", help="download the timm weights")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--workers", type=int, default=None, help="notebook DataLoader workers")
    parser.add_argument("--notebook-interpolation", default="bilinear")
    parser.add_argument("--data-dir", type=Path, default=None, help="holds cifar-100-python/")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak, for share")
    parser.add_argument("--slice", type=int, default=None, help="images per interleaved turn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="default benchmarks/out/")
    args = parser.parse_args()
    args.device = models.resolve_device(args.device)
    if args.workers is None:  # on 2 CPU cores workers only steal the model's cores
        args.workers = min(8, os.cpu_count() or 1) if args.device.type == "cuda" else 0
    if args.slice is None:  # a GPU needs big slices to be busy; a CPU is slow enough for small
        args.slice = args.images if args.device.type == "cuda" else 2 * args.batch_size
    return args


def interleaved(
    paths: dict[str, Callable[[int, int], np.ndarray]], count: int, args: argparse.Namespace
) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Seconds per round of each path, alternating paths slice by slice; the embeddings.

    A shared machine's load changes by the second: alternating every few batches lets every
    path see the same load, so the ratio holds even when the absolute numbers do not.
    """
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    outputs: dict[str, list[np.ndarray]] = {}
    for round_ in range(args.rounds):
        outputs = {name: [] for name in paths}
        spent = dict.fromkeys(paths, 0.0)
        for index, start in enumerate(range(0, count, args.slice)):
            names = list(paths)
            turn = (round_ + index) % len(names)
            for name in names[turn:] + names[:turn]:  # rotate who goes first
                vectors, elapsed = timed(partial(paths[name], start, start + args.slice))
                outputs[name].append(vectors)
                spent[name] += elapsed
        for name, elapsed in spent.items():
            seconds[name].append(elapsed)
        rates = "  ".join(f"{name} {count / spent[name]:8.1f}" for name in paths)
        print(f"round {round_ + 1}/{args.rounds} img/s: {rates}", flush=True)
    return seconds, {name: np.concatenate(parts) for name, parts in outputs.items()}


def main() -> None:
    """Warm up, then time the paths in interleaved rounds; print and record medians."""
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "0" if args.pretrained else "1")
    images, source = load_images(args.images, args.data_dir, args.seed)
    pngs = [encode_png(image) for image in images]  # what the load stage stores
    config = RunConfig(
        dataset="cifar100",
        model=args.model,
        pretrained=args.pretrained,
        batch_size=args.batch_size,
        device=args.device.type,
        precision=args.precision,
    )
    # exactly as the flow's extraction task builds it
    extractor = build_extractor(config.params.embeddings)
    prep, device = extractor.prep, extractor.device
    fp32 = models.build_model(args.model, pretrained=args.pretrained, seed=config.seed)
    macs = model_macs(fp32, prep.image_size)
    lean = copy.deepcopy(fp32)  # the work the project's rewrites leave (the last block shrinks)
    project_macs = model_macs(lean, prep.image_size) if fast_vit.class_token_only(lean) else macs
    fp32 = fp32.to(device)
    on_device = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)  # once, not per batch

    paths: dict[str, Callable[[int, int], np.ndarray]] = {
        "notebook": lambda a, b: notebook_embed(
            fp32, notebook_loader(images[a:b], prep, args), device
        ),
        "project_png": lambda a, b: extractor.embed_encoded(pngs[a:b]),
        "project_uint8": lambda a, b: extractor.embed_arrays(on_device[a:b]),
    }
    for path in paths.values():  # warm-up: one batch each (allocator, kernels, thread pools)
        path(0, args.batch_size)
    seconds, outputs = interleaved(paths, len(images), args)

    rates = {name: len(images) / median(times) for name, times in seconds.items()}
    gflop = {"notebook": 2 * macs / 1e9}
    gflop["project_png"] = gflop["project_uint8"] = 2 * project_macs / 1e9
    ratios = {
        name: median([n / p for n, p in zip(seconds["notebook"], seconds[name], strict=True)])
        for name in ("project_png", "project_uint8")
    }
    record: dict[str, Any] = {
        "command": "python benchmarks/extract.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "weights": "pretrained" if args.pretrained else "random-init",
        "images": len(images),
        "image_source": source,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "slice": args.slice,
        "device": str(device),
        "project_precision": extractor.precision,
        "project_preprocessing": prep.as_dict(),
        "notebook": {
            "precision": "fp32",
            "resize": f"PIL {args.notebook_interpolation}",
            "dataloader_workers": args.workers,
        },
        "gflop_per_image": gflop,
        "img_per_s": rates,
        "seconds": seconds,
        "ratio_vs_notebook": ratios,
        "tflops": {name: rate * gflop[name] / 1e3 for name, rate in rates.items()},
        "cosine_png_vs_notebook": cosine(outputs["project_png"], outputs["notebook"]),
        "cosine_png_vs_uint8": cosine(outputs["project_png"], outputs["project_uint8"]),
    }
    if prep.interpolation != args.notebook_interpolation:  # like with like: same kernel family
        args.notebook_interpolation = prep.interpolation
        same_kernel = notebook_embed(fp32, notebook_loader(images, prep, args), device)
        record[f"cosine_png_vs_notebook_{prep.interpolation}"] = cosine(
            outputs["project_png"], same_kernel
        )
    if args.compile:
        record["compile"] = time_compiled(extractor, pngs)
    peak = args.peak_tflops or next(
        (v for k, v in GPU_BF16_PEAK.items() if device.type == "cuda" and k in gpu_name()), None
    )
    if peak:
        record["share_of_peak"] = record["tflops"]["project_uint8"] / peak
    record["environment"] = environment()
    report(record)
    print("wrote", write_json("extract", record, args.json))


def gpu_name() -> str:
    """Name of GPU 0, or an empty string."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


def time_compiled(extractor: Any, pngs: list[bytes]) -> dict[str, float]:
    """torch.compile of the project's model, timed apart: first call (compile) and a warm call."""
    extractor.model = torch.compile(extractor.model)
    _, first = timed(lambda: extractor.embed_encoded(pngs[: extractor.batch_size]))
    _, warm = timed(lambda: extractor.embed_encoded(pngs), extractor.device)
    sync(extractor.device)
    return {"first_batch_s": first, "img_per_s": len(pngs) / warm}


def report(record: dict[str, Any]) -> None:
    """Print the figures a reader wants first."""
    rates, tflops, gflop = record["img_per_s"], record["tflops"], record["gflop_per_image"]
    print(
        f"\n{record['model']} ({record['weights']}) on {record['device']}, "
        f"{record['images']} images ({record['image_source']}), batch {record['batch_size']}, "
        f"median of {record['rounds']} rounds, GFLOP/image: notebook {gflop['notebook']:.2f}, "
        f"project {gflop['project_png']:.2f}"
    )
    for name, rate in rates.items():
        print(f"  {name:14s} {rate:9.1f} img/s  {tflops[name]:7.3f} TFLOP/s")
    ratio = record["ratio_vs_notebook"]
    print(
        f"  ratio to the notebook (median of per-round ratios): PNG {ratio['project_png']:.2f}x, "
        f"uint8 {ratio['project_uint8']:.2f}x"
    )
    for key, value in record.items():
        if key.startswith("cosine"):
            print(f"  {key}: min {value['min']:.5f} mean {value['mean']:.5f}")
    if "share_of_peak" in record:
        print(f"  share of bf16 peak: {record['share_of_peak']:.1%}")
    if "compile" in record:
        print(f"  torch.compile: {record['compile']}")


if __name__ == "__main__":
    main()
