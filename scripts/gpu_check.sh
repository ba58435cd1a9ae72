#!/usr/bin/env bash
# Every GPU measurement of the project in one run (under 5 minutes on an H100/H200-class card).
#
#   bash scripts/gpu_check.sh            # from the repository root; PYTHON=... to pick the interpreter
#
# Runs, each under its own time limit, on CUDA only:
#   scripts/bench_model.py  - predict's model path (S = 50 at 1024x1024) vs the authors' formulation, fp32/bf16
#   scripts/bench_raster.py - rasterize_organs_torch and soft masks (needs the [bench] extra's OpenCV)
#   scripts/bench_soft.py   - the soft-mask benchmark, when present
#   scripts/bench_device.py - DeviceMasks: hard and soft organ masks drawn on the GPU at 512, batches of 256,
#                             against the CPU path of the same run
# and prints their table rows as they come.  Issue targets on an H100/H200: predict >= 300 images/s
# (S = 50, 1024), rasterize_organs_torch >= 20,000 masks/s (batches of 1024 organs at 1024x1024),
# DeviceMasks >= 50,000 hard and >= 20,000 soft organ masks/s (512, batches of 256).
# Without CUDA it says so and exits 0 (nothing to measure).
set -u
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
export PYTHONPATH="${PWD}${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device (or no torch): nothing to measure"
    exit 0
fi
"$PYTHON" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu_check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}')"

status=0
run() {  # run LIMIT_SECONDS SCRIPT ARGS...: one benchmark, its own time limit, failures reported not fatal
    local limit=$1 script=$2
    shift 2
    if [ ! -f "scripts/$script" ]; then
        echo "gpu_check: scripts/$script not present, skipped"
        return
    fi
    echo
    echo "== $script $* (limit ${limit}s)"
    local start=$SECONDS
    timeout --signal=INT "$limit" "$PYTHON" "scripts/$script" "$@"
    local code=$?
    echo "== $script: exit $code after $((SECONDS - start)) s"
    [ "$code" -eq 0 ] || status=1
}

run 150 bench_model.py --devices cuda --images 128 --batch-sizes 8,32,64 --reference-images 4 --repeats 2
run 75 bench_raster.py --images 64 --batch 192 --repeat 3
run 60 bench_soft.py
run 90 bench_device.py --size 512 --batch 256 --cpu-batch 8 --cpu-soft-batch 1 --repeat 3
exit $status
