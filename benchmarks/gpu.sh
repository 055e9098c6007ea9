#!/usr/bin/env bash
# The GPU checks in one go, a few minutes on an H100/H200: all 60k CIFAR-sized images through
# ViT-S/16 and the CNNs (EfficientNet-Lite0, ResNet-50) at 224 against the notebook way,
# torch.compile timed apart, the exact kNN of 60k x 384 in torch, and class similarity.
#   bash benchmarks/gpu.sh [OUT_DIR]        (default benchmarks/out)
# Knobs: IMAGES (60000), BATCH (1000), CNNS ("tf_efficientnet_lite0 resnet50"), COMPILE (1),
# KNN_ROWS (60000), DEVICE (auto; cpu checks this script end to end without a GPU),
# PYTHON (.venv/bin/python), DATA_DIR (holds cifar-100-python/ for real images; else seeded
# synthetic ones). A failing step is reported and the next one still runs; the exit status is
# the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/out}"
python="${PYTHON:-.venv/bin/python}"
images="${IMAGES:-60000}"
batch="${BATCH:-1000}"
device="${DEVICE:-auto}"
knn_rows="${KNN_ROWS:-60000}"
data=()
if [[ -n "${DATA_DIR:-}" ]]; then data=(--data-dir "$DATA_DIR"); fi
mkdir -p "$out"
failed=0
step() {  # step NAME COMMAND...: run, time, and keep going on failure
    local name="$1" start=$SECONDS
    shift
    echo "== $name ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null))"
    if "$@"; then
        echo "== $name: ok in $((SECONDS - start)) s"
    else
        echo "== $name: FAILED (exit $?) after $((SECONDS - start)) s"
        failed=$((failed + 1))
    fi
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || echo "no nvidia-smi"
step "extract vit_small_patch16_224" "$python" benchmarks/extract.py --device "$device" \
    --images "$images" --batch-size "$batch" --rounds 3 "${data[@]}" \
    --json "$out/extract-gpu.json"
for model in ${CNNS:-tf_efficientnet_lite0 resnet50}; do
    step "extract $model" "$python" benchmarks/extract.py --model "$model" --device "$device" \
        --images "$images" --batch-size "$batch" --rounds 3 "${data[@]}" \
        --json "$out/extract-gpu-$model.json"
done
if [[ "${COMPILE:-1}" == 1 ]]; then
    step "extract vit_small_patch16_224 torch.compile" "$python" benchmarks/extract.py \
        --device "$device" --images "$images" --batch-size "$batch" --rounds 1 --compile \
        "${data[@]}" --json "$out/extract-gpu-compile.json"
fi
step "exact kNN $knn_rows x 384" "$python" benchmarks/knn.py --device "$device" \
    --rows "$knn_rows" --kinds flat --rounds 3 --json "$out/knn-gpu.json"
step "class similarity" "$python" benchmarks/similarity.py --rows "$knn_rows" \
    --json "$out/similarity-gpu.json"
echo "== done: $failed failed step(s); figures in $out"
exit "$failed"
