#!/usr/bin/env bash
# The GPU checks in one go, a few minutes on an H100/H200: all 60k CIFAR-sized images through
# ViT-S/16 at 224 against the notebook way, torch.compile timed apart, and similarity/kNN.
#   bash benchmarks/gpu.sh [OUT_DIR]        (default benchmarks/out)
# Knobs: IMAGES (60000), BATCH (1000), COMPILE (1), PYTHON (.venv/bin/python), DATA_DIR (holds
# cifar-100-python/ for real images; else seeded synthetic ones).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/out}"
python="${PYTHON:-.venv/bin/python}"
images="${IMAGES:-60000}"
batch="${BATCH:-1000}"
data=()
if [[ -n "${DATA_DIR:-}" ]]; then data=(--data-dir "$DATA_DIR"); fi
mkdir -p "$out"

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || echo "no nvidia-smi"
"$python" benchmarks/extract.py --images "$images" --batch-size "$batch" --rounds 3 \
    "${data[@]}" --json "$out/extract-gpu.json"
if [[ "${COMPILE:-1}" == 1 ]]; then
    "$python" benchmarks/extract.py --images "$images" --batch-size "$batch" --rounds 1 \
        --compile "${data[@]}" --json "$out/extract-gpu-compile.json"
fi
"$python" benchmarks/similarity.py --json "$out/similarity-gpu.json"
