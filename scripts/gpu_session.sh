#!/usr/bin/env bash
# One GPU session on a lent machine: install, device query and ceilings, verify every kernel, the timed runs
# that become baselines/, and a second run of the benchmark shapes for run-to-run agreement.
# Full logs and JSON go to $OUT (default ./gpu-out); a short summary is printed last.
# Usage: FP4BENCH_GIT_COMMIT=$(git rev-parse HEAD) bash scripts/gpu_session.sh [main|repeat]
#   main    device, verify, the task shapes (nvfp4), the benchmark shapes saved as baselines/<gpu>.json
#   repeat  the benchmark shapes again, compared with the stored baseline (run-to-run agreement)
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 || export PYTHONPATH=$PWD
fp4() { python3 -m fp4bench "$@"; }
KERNELS='sm90-*,triton-fp4,triton-dot-scaled,cublas-dense,torch-dequant-mm,torch-scaled-mm,sm1*'
BENCH_FORMATS=nvfp4,mxfp4,w4a16-nvfp4,w4a16-mxfp4

STAGE=${1:-main}
if [ "$STAGE" = repeat ]; then
    fp4 run --shapes shapes/task.yml --group benchmarks --format "$BENCH_FORMATS" --kernels "$KERNELS" -q \
        --budget 1 --json "$OUT/bench2.json" > "$OUT/bench2.txt" 2>&1; echo "bench2 rc=$?"
    fp4 compare baselines/ "$OUT/bench2.json" > "$OUT/compare.md" 2>&1; echo "compare rc=$?"
    tail -25 "$OUT/compare.md"
    exit 0
fi

fp4 device --measure --json > "$OUT/device.json" 2> "$OUT/device.err"; echo "device rc=$?"
fp4 verify --device cuda --format all --seeds 2 > "$OUT/verify.txt" 2>&1; echo "verify rc=$?"
fp4 run --shapes shapes/task.yml --format nvfp4 --kernels "$KERNELS" --budget 1 -q \
    --json "$OUT/task_nvfp4.json" > "$OUT/task_nvfp4.txt" 2>&1; echo "task nvfp4 rc=$?"
fp4 run --shapes shapes/task.yml --group benchmarks --format "$BENCH_FORMATS" --kernels "$KERNELS" -q \
    --budget 1 --save-baseline --json "$OUT/bench1.json" > "$OUT/bench1.txt" 2>&1; echo "bench1 rc=$?"
cp baselines/*.json "$OUT/" 2>/dev/null
tail -3 "$OUT/verify.txt"
grep -E "geomean|SKIP" "$OUT/bench1.txt" | grep -E "geomean|torch-scaled-mm" | head -40
