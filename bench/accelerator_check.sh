#!/usr/bin/env bash
# One script for the day an accelerator is at hand: runs unchanged on a GPU or TPU host (under
# 8 minutes) and prints, each after the command that produced it:
#   1. the ResNet-50 224 px bf16 train step: images/s per chip and MFU (cost_analysis FLOPs vs
#      the chip's peak: looked up by device kind, or PEAK_TFLOPS=...), the device
#      augmentation's share of the step, and the same step on 1 device vs all local devices;
#   2. the input pipeline's images/s on generated ~400x350 JPEGs against that step;
#   3. the NT-Xent loss's compiled memory per device at global batch 32k, plain and chunked.
#
#   bash bench/accelerator_check.sh                 # on the accelerator host
#   PEAK_TFLOPS=989 bash bench/accelerator_check.sh # the chip's peak, if the table lacks it
#   bash bench/accelerator_check.sh --smoke         # tiny sizes on a CPU (the test suite's run)
#
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
for arg in "$@"; do
    case "$arg" in
        --smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $arg (only --smoke)" >&2; exit 2 ;;
    esac
done
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3} TF_ENABLE_ONEDNN_OPTS=0
PEAK=()
[ -n "${PEAK_TFLOPS:-}" ] && PEAK=(--peak_tflops="$PEAK_TFLOPS")

if [ "$SMOKE" = 1 ]; then
    # 2 simulated CPU devices, so "1 device vs all" has something to compare; LLVM at O0 (the
    # smoke's figures are not speeds): compiles 17 -> 12 s a step, the whole smoke 131 -> 110 s.
    export XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0"
    STEP=(--depth=18 --width=0.125 --image_size=8 --per_device_batch=2 --dtype=float32
          --steps=1 --conv_impl=xla)  # XLA's convolutions, as on TPU/GPU (and fastest to compile)
    PIPE=(--cases=imagenet224 --num_jpegs=16 --imagenet_batch=8 --seconds=0.5 --steps=1
          --imagenet_depth=18 --imagenet_width=0.125 --imagenet_step_batch=2 --conv_impl=xla)
    LOSS=(--what=loss --devices=2 --batches=512 --chunks=128)
else
    STEP=(--depth=50 --width=1 --image_size=224 --per_device_batch=64 --dtype=bfloat16
          --steps=10)
    PIPE=(--cases=imagenet224 --num_jpegs=500 --imagenet_batch=256 --seconds=10 --steps=5
          --imagenet_depth=50 --imagenet_width=1 --imagenet_step_batch=128
          --imagenet_dtype=bfloat16)
    LOSS=(--what=loss --devices=0 --batches=32768 --chunks=1024,4096)
fi

run() {
    echo
    echo "\$ $*"
    "$@"
}

start=$(date +%s)
echo "accelerator check ($( [ "$SMOKE" = 1 ] && echo smoke || echo full )), $(date -u +%FT%TZ)"
run "$PYTHON" bench/accelerator_step.py "${STEP[@]}" "${PEAK[@]}"
run "$PYTHON" bench/input_pipeline.py "${PIPE[@]}"
run "$PYTHON" bench/memory.py "${LOSS[@]}"
echo
echo "accelerator check done in $(( $(date +%s) - start )) s"
