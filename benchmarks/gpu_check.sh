#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): the tests marked `gpu`, fit against a bare loop in 32 / 16-mixed /
# bf16-mixed, feature extraction, and `transferlab demo`, in under 8 minutes on one H100. Writes
# benchmarks/results/gpu_check_<gpu>.json and its log gpu_check_<gpu>.log (or under $GPU_CHECK_OUT).
# Without a GPU it says so and makes a short dry run on the CPU, written to a temporary folder.
#
#   benchmarks/gpu_check.sh                      # everything
#   benchmarks/gpu_check.sh --stages train       # extra arguments go to gpu_check.py (see its --help)
set -o pipefail
cd "$(dirname "$0")/.." || exit 2
if [ -n "$PYTHON" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's transferlab, installed or not
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1 | tr '[:upper:]' '[:lower:]' \
        | sed -E 's/[^a-z0-9]+/_/g; s/^_+//; s/_+$//')
    OUT_DIR=${GPU_CHECK_OUT:-benchmarks/results}
else
    echo "gpu_check.sh: no GPU found (nvidia-smi missing or it lists none): dry run on the CPU at tiny sizes"
    NAME=cpu_dryrun
    OUT_DIR=${GPU_CHECK_OUT:-$(mktemp -d -t gpu-check-XXXXXX)}
fi
mkdir -p "$OUT_DIR" || exit 2
LOG="$OUT_DIR/gpu_check_$NAME.log"
echo "gpu_check.sh: log $LOG"
"$PY" benchmarks/gpu_check.py --out-dir "$OUT_DIR" "$@" 2>&1 | tee "$LOG"
status=$?
# issue 23: ViT-B/16 bf16 fit over the same model on tensors already on the device, its MFU (H200 dense bf16 peak:
# 989 TFLOP/s) and the first epoch over a steady one; on the CPU a tiny dry run of the same script
if [ "$NAME" = cpu_dryrun ]; then VIT=(--quick --sizes 224 --batch 8 --precision 32); else
    VIT=(--device gpu --sizes 224 --batch 128 --precision bf16-mixed --peak-tflops 989); fi
"$PY" benchmarks/data_path.py --source scratch:timm:vit_base_patch16_224 --strategy scratch "${VIT[@]}" \
    --out "$OUT_DIR/data_path_vit_$NAME.json" 2>&1 | tee -a "$LOG" || status=$?
# issue 23 part 2 (no shape stalls): the same with cuDNN's kernel search on, its first epoch against a steady one
[ "$NAME" = cpu_dryrun ] || "$PY" benchmarks/data_path.py --source scratch:timm:vit_base_patch16_224 --strategy scratch \
    "${VIT[@]}" --cudnn-benchmark --out "$OUT_DIR/data_path_vit_cudnn_benchmark_$NAME.json" 2>&1 | tee -a "$LOG" \
    || status=$?
exit $status
