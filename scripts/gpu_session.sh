#!/usr/bin/env bash
# GPU sessions on a lent machine; each stage fits one device call. Full logs and JSON go to $OUT (default
# ./gpu-out); a short summary is printed last. Run from the repository root:
#   FP4BENCH_GIT_COMMIT=$(git rev-parse HEAD) bash scripts/gpu_session.sh STAGE
# Stages:
#   tune      verify every kernel (all formats), tune the sm90 kernels on the benchmark shapes (writes
#             fp4bench/tuned/<gpu>.json, copied to $OUT), then the benchmark and decode groups timed (bench1.json)
#   repeat    the same run in a fresh process (bench2.json), compared with bench1 (run-to-run agreement,
#             configurations) and with the stored baseline; the benchmark shapes timed with --timer nvbench
#   baseline  the benchmark and decode groups saved as baselines/<gpu>.json
#   final     after a kernel change: the GPU tests of the sm90 kernels and the registry matrix, verify of
#             sm90-w4a16 on the verify and task shapes, tuning of sm90-w4a16 and triton-dot-scaled (benchmark
#             and decode groups), the baseline run and a repeat in a fresh process, compared
#   twice     the baseline run and a repeat in a fresh process, compared
#   mainjob   tuning of triton-dot-scaled's W4A16 benchmark cases, the baseline run and its repeat, and the
#             README's main job timed with warm caches
#   new       (~3 min) this session's additions: sanitizer, problem and mxfp8 GPU tests and verify, then the
#             benchmark cases of the three problems (saved as baselines) and of mxfp8 timed
#   mxfp8     (~40 s) the mxfp8 format: verify of every mxfp8 kernel on the verify shapes and of sm90-mxfp8-fp8,
#             sm90-mxfp8 and torch-scaled-fp8 on the task shapes, the fp8 accumulation measurement
#             (scripts/mxfp8_accumulation.py), the three M = 128 benchmark shapes timed (mxfp8.json: the
#             file to store in baselines/); its GPU tests: pytest -m gpu tests/test_sm90_kernels.py -k mxfp8
#   wgmma     the sm90 CUDA kernels (kernels/sm90/): build, every tile configuration checked on edge shapes
#             (tests/test_sm90_wgmma.py, marked gpu), verify on the verify and task shapes, tuning, the benchmark and
#             decode groups timed against the Triton kernels and cublas-dense, an ncu profile of two cases
#   peers     (needs the humming-kernels wheel in .whl/) the humming baselines' GPU tests (tests/test_peers.py),
#             then humming beside cublas-dense and sm90-w4a16 on 128x7168x16384 and 16x7168x16384 in the W4A16
#             formats and w4a8, eager and --graph (peers_eager.json, peers_graph.json)
#   session   (< 10 min) the sm90 CUDA kernels' cycle: build, check of every tile, verify, tuning, the baseline run
#             (with humming when its wheel is in .whl/), a repeat of the benchmark group compared, ncu of two cases
#   problems  the competition's GEMV, dual GEMM and grouped GEMM: the honest submission, the sm90 kernel, the
#             reference and the baselines verified on each problem's test cases, the sm90 kernel and the baselines
#             timed on its benchmark cases
#             (--save-baseline: baselines/<gpu>-<problem>.json, copied to $OUT)
#   integrity (~6 min) the timed-call checks on the GPU: the GPU tests of tests/test_timed_integrity.py (streams,
#             in-flight outputs, the persisting L2, the cheats and honest kernels timed, graph mode, nvbench when
#             cuda-bench is there), every planted cheat and honest submission run on shapes/verify.yml (each
#             cheat must fail with its class: $OUT/integrity_classes.txt, one line per case, counted on stdout)
#             and verify of every kernel and format; logs in $OUT/integrity_*
#   integrity-bench (~6 min) honest timings under the checks: the benchmark and decode groups, mxfp8 and the
#             three problems' benchmark cases timed and compared with baselines/ (timings must not move)
# Optional wheels (cuda-bench for --timer nvbench) are installed from .whl/ when present.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl > "$OUT/install.log" 2>&1 && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fp4() { python3 -m fp4bench "$@"; }
KERNELS='sm90-*,triton-dot-scaled,cublas-dense'
FORMATS=nvfp4,mxfp4,w4a16-nvfp4,w4a16-mxfp4
BENCH=(--shapes shapes/task.yml --group benchmarks --group decode --format "$FORMATS" --kernels "$KERNELS"
       --budget 1 -q)

case "${1:-tune}" in
tune)
    fp4 verify --device cuda --format all --seeds 1 > "$OUT/verify.txt" 2>&1; echo "verify rc=$?"
    fp4 tune --shapes shapes/task.yml --group benchmarks --kernels 'sm90-*' --format "$FORMATS" --budget 0.3 -q \
        --json "$OUT/tune.json" > "$OUT/tune.txt" 2>&1; echo "tune rc=$?"
    cp fp4bench/tuned/*.json "$OUT/" 2>/dev/null
    fp4 run "${BENCH[@]}" --json "$OUT/bench1.json" > "$OUT/bench1.txt" 2>&1; echo "bench1 rc=$?"
    tail -2 "$OUT/verify.txt"
    grep -E "geomean" "$OUT/bench1.txt" | head -40
    ;;
repeat)
    fp4 run "${BENCH[@]}" --json "$OUT/bench2.json" > "$OUT/bench2.txt" 2>&1; echo "bench2 rc=$?"
    fp4 compare "$OUT/bench1.json" "$OUT/bench2.json" > "$OUT/compare12.md" 2>&1; echo "compare bench1 bench2 rc=$?"
    fp4 compare baselines/ "$OUT/bench1.json" > "$OUT/compare_stored.md" 2>&1; echo "compare stored bench1 rc=$?"
    fp4 run --shapes shapes/task.yml --group benchmarks --format nvfp4 --kernels 'sm90-nvfp4,cublas-dense' \
        --timer nvbench -q --json "$OUT/nvbench.json" > "$OUT/nvbench.txt" 2>&1; echo "nvbench rc=$?"
    tail -3 "$OUT/compare12.md"; tail -3 "$OUT/compare_stored.md"; grep -E "geomean" "$OUT/nvbench.txt"
    ;;
baseline)
    fp4 run "${BENCH[@]}" --save-baseline --json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1; echo "bench rc=$?"
    cp baselines/*.json "$OUT/" 2>/dev/null
    grep -E "geomean" "$OUT/bench.txt" | head -40
    ;;
final)
    python3 -m pytest -q -x -p no:cacheprovider -m gpu tests/test_sm90_kernels.py tests/test_kernels.py \
        > "$OUT/pytest_gpu.txt" 2>&1; echo "pytest gpu rc=$?"
    for shapes in shapes/verify.yml shapes/task.yml; do
        fp4 verify --device cuda --shapes "$shapes" --kernel sm90-w4a16 --format w4a16-nvfp4,w4a16-mxfp4 --seeds 2
    done > "$OUT/verify.txt" 2>&1; echo "verify w4a16 rc=$?"
    fp4 tune --shapes shapes/task.yml --group benchmarks --group decode --kernels 'sm90-w4a16,triton-dot-scaled' \
        --format "$FORMATS" --budget 0.3 -q --json "$OUT/tune.json" > "$OUT/tune.txt" 2>&1; echo "tune rc=$?"
    cp fp4bench/tuned/*.json "$OUT/" 2>/dev/null
    fp4 run "${BENCH[@]}" --save-baseline --json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1; echo "bench rc=$?"
    fp4 run "${BENCH[@]}" --json "$OUT/bench2.json" > "$OUT/bench2.txt" 2>&1; echo "bench2 rc=$?"
    fp4 compare "$OUT/bench.json" "$OUT/bench2.json" > "$OUT/compare.md" 2>&1; echo "compare rc=$?"
    tail -1 "$OUT/pytest_gpu.txt"; grep -E "passed" "$OUT/verify.txt"; tail -1 "$OUT/compare.md"
    grep -E "geomean" "$OUT/bench.txt" | head -40
    ;;
twice)
    fp4 run "${BENCH[@]}" --save-baseline --json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1; echo "bench rc=$?"
    fp4 run "${BENCH[@]}" --json "$OUT/bench2.json" > "$OUT/bench2.txt" 2>&1; echo "bench2 rc=$?"
    fp4 compare "$OUT/bench.json" "$OUT/bench2.json" > "$OUT/compare.md" 2>&1; echo "compare rc=$?"
    tail -1 "$OUT/compare.md"; grep -E "geomean" "$OUT/bench.txt" | head -40
    ;;
mainjob)
    # The README's main job, timed with warm caches: once to warm them, once measured.
    fp4 tune --shapes shapes/task.yml --group benchmarks --kernels triton-dot-scaled --format w4a16-mxfp4 \
        --budget 0.3 -q > "$OUT/tune.txt" 2>&1; echo "tune rc=$?"
    cp fp4bench/tuned/*.json "$OUT/" 2>/dev/null
    fp4 run "${BENCH[@]}" --save-baseline --json "$OUT/bench.json" > "$OUT/bench.txt" 2>&1; echo "bench rc=$?"
    fp4 run "${BENCH[@]}" --json "$OUT/bench2.json" > "$OUT/bench2.txt" 2>&1; echo "bench2 rc=$?"
    fp4 compare "$OUT/bench.json" "$OUT/bench2.json" > "$OUT/compare.md" 2>&1; echo "compare rc=$?"
    fp4 run --shapes shapes/task.yml > "$OUT/mainjob_warmup.txt" 2>&1; echo "main job (warm-up) rc=$?"
    began=$(date +%s.%N)
    python3 -m fp4bench run --shapes shapes/task.yml > "$OUT/mainjob.txt" 2>&1; rc=$?
    echo "main job rc=$rc wall $(python3 -c "print(round($(date +%s.%N) - $began, 1))") s"
    tail -1 "$OUT/mainjob.txt"; tail -1 "$OUT/compare.md"
    ;;
mxfp8)
    fp4 verify --device cuda --shapes shapes/verify.yml --format mxfp8 --seeds 1 --kernel 'sm90-mxfp8*' \
        --kernel 'torch-*' --kernel cublas-dense --kernel triton-dot-scaled > "$OUT/verify_mxfp8.txt" 2>&1
    echo "verify mxfp8, every kernel and baseline (verify.yml) rc=$?"
    fp4 verify --device cuda --shapes shapes/task.yml --format mxfp8 --kernel 'sm90-mxfp8*' \
        --kernel torch-scaled-fp8 --seeds 1 > "$OUT/verify_mxfp8_task.txt" 2>&1
    echo "verify mxfp8 (task.yml) rc=$?"
    python3 scripts/mxfp8_accumulation.py > "$OUT/accumulation.txt" 2>&1; echo "accumulation rc=$?"
    fp4 run --shapes shapes/task.yml --group benchmarks --format mxfp8 --budget 0.5 -q \
        --kernels 'sm90-mxfp8*,torch-scaled-fp8,triton-dot-scaled,cublas-dense' --json "$OUT/mxfp8.json" \
        > "$OUT/bench_mxfp8.txt" 2>&1; echo "bench mxfp8 rc=$?"
    grep -E "FAIL|passed" "$OUT/verify_mxfp8.txt" "$OUT/verify_mxfp8_task.txt"
    cat "$OUT/accumulation.txt"; cat "$OUT/bench_mxfp8.txt"
    ;;
wgmma)
    export FP4BENCH_BUILD_JOBS=16
    W='sm90-w4a16,sm90-nvfp4,sm90-mxfp4'
    fp4 build --arch sm_90a --kernels sm90-fp4w > "$OUT/log.txt" 2>&1 || { echo "build failed"; tail -30 "$OUT/log.txt"; }
    timeout 200 python3 -m pytest -q -x -p no:cacheprovider -m gpu tests/test_sm90_wgmma.py > "$OUT/correct.txt" 2>&1
    echo "every tile rc=$? $(tail -1 "$OUT/correct.txt")"
    for shapes in shapes/verify.yml shapes/task.yml; do
        fp4 verify --device cuda --shapes "$shapes" --kernel "$W" --format nvfp4,nvfp4-bf16,mxfp4,w4a16-nvfp4,w4a16-mxfp4 \
            --seeds 2 --case-timeout 60 -q
    done >> "$OUT/correct.txt" 2>&1; echo "verify rc=$? ($(grep -c FAIL "$OUT/correct.txt") FAIL lines)"
    fp4 tune --shapes shapes/task.yml --group benchmarks --group decode --kernels "$W" --format "$FORMATS" \
        --budget 0.1 -q --json "$OUT/tune.json" >> "$OUT/log.txt" 2>&1; echo "tune rc=$?"
    cp fp4bench/tuned/"$(python3 -c 'import torch; from fp4bench.arch import gpu_slug; print(gpu_slug(torch.cuda.get_device_name()))')".json "$OUT/" 2>/dev/null
    fp4 run --shapes shapes/task.yml --group benchmarks --group decode --format "$FORMATS" \
        --kernels "$W,sm90-w4a16-triton,cublas-dense" --budget 0.3 -q --json "$OUT/bench.json" \
        > "$OUT/bench.txt" 2>&1; echo "bench rc=$?"
    for case in "sm90-w4a16 w4a16-nvfp4 128 7168 16384" "sm90-w4a16 w4a16-nvfp4 16 7168 16384" \
                "sm90-nvfp4 nvfp4 128 4096 7168"; do
        echo "=== $case"
        ncu --clock-control none -k regex:fp4w_gemm --launch-skip 2 -c 1 --section SpeedOfLight \
            --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
            python3 scripts/profile_sm90.py $case
    done > "$OUT/ncu.txt" 2>&1; echo "ncu rc=$?"
    grep -E "geomean" "$OUT/bench.txt" | head -30
    ;;
session)
    # One call for the sm90 CUDA kernels' whole cycle, within 10 minutes (each step capped): build; every tile
    # checked on edge shapes; verify; tuning; the benchmark and decode groups timed with every sm90 kernel,
    # triton-dot-scaled, cublas-dense and humming (when its wheel is in .whl/) and saved as the GPU's baseline;
    # a repeat of the benchmark group in a fresh process, compared; ncu of two cases. Eight files in $OUT.
    export FP4BENCH_BUILD_JOBS=16
    W='sm90-w4a16,sm90-nvfp4,sm90-mxfp4'
    gpu=$(python3 -c 'import torch; from fp4bench.arch import gpu_slug; print(gpu_slug(torch.cuda.get_device_name()))')
    fp4 build --arch sm_90a --kernels sm90-fp4w > "$OUT/log.txt" 2>&1 || { echo "build failed"; tail -30 "$OUT/log.txt"; }
    timeout 90 python3 -m pytest -q -x -p no:cacheprovider -m gpu tests/test_sm90_wgmma.py > "$OUT/correct.txt" 2>&1
    echo "every tile rc=$? $(tail -1 "$OUT/correct.txt")"
    timeout 60 python3 -m fp4bench verify --device cuda --shapes shapes/verify.yml --kernel "$W" \
        --format nvfp4,nvfp4-bf16,mxfp4,w4a16-nvfp4,w4a16-mxfp4 --seeds 1 --case-timeout 30 -q \
        >> "$OUT/correct.txt" 2>&1; echo "verify rc=$? ($(grep -c FAIL "$OUT/correct.txt") FAIL lines)"
    timeout 100 python3 -m fp4bench tune --shapes shapes/task.yml --group benchmarks --group decode --kernels "$W" \
        --format "$FORMATS" --budget 0.05 -q >> "$OUT/log.txt" 2>&1; echo "tune rc=$?"
    cp "fp4bench/tuned/$gpu.json" "$OUT/tuned-$gpu.json" 2>/dev/null
    timeout 170 python3 -m fp4bench run --shapes shapes/task.yml --group benchmarks --group decode --format "$FORMATS" \
        --kernels "$KERNELS,humming" --budget 0.3 -q --case-timeout 60 --save-baseline --json "$OUT/bench.json" \
        > "$OUT/bench.txt" 2>&1; echo "bench rc=$?"
    cp "baselines/$gpu.json" "$OUT/baseline-$gpu.json" 2>/dev/null
    timeout 60 python3 -m fp4bench run --shapes shapes/task.yml --group benchmarks --format "$FORMATS" \
        --kernels "$KERNELS,humming" --budget 0.3 -q --json "$OUT/bench2.json" > /dev/null 2>&1; echo "bench2 rc=$?"
    python3 -m fp4bench compare "$OUT/bench.json" "$OUT/bench2.json" > "$OUT/compare.md" 2>&1; echo "compare rc=$?"
    for case in "sm90-w4a16 w4a16-nvfp4 128 7168 16384"; do
        echo "=== $case"
        timeout 40 ncu --clock-control none -k regex:fp4w_gemm --launch-skip 2 -c 1 --section SpeedOfLight \
            --section WarpStateStats --section ComputeWorkloadAnalysis python3 scripts/profile_sm90.py $case
    done > "$OUT/ncu.txt" 2>&1; echo "ncu rc=$?"
    grep -E "geomean" "$OUT/bench.txt" | head -40; tail -2 "$OUT/compare.md"
    ;;
problems)
    for p in gemv dual_gemm group_gemm; do
        fp4 verify --problem "nvfp4_$p" --group tests --device cuda --seeds 1 -q --isolation none \
            --kernel "tests/fixtures/problems/${p}_correct.py,sm90-*,torch-ref,torch-dequant-mm,cublas-dense" \
            > "$OUT/verify_$p.txt" 2>&1; echo "verify $p rc=$? ($(tail -1 "$OUT/verify_$p.txt"))"
        fp4 run --problem "nvfp4_$p" --group benchmarks --device cuda --kernels 'sm90-*,cublas-dense,torch-dequant-mm' \
            --budget 0.3 -q --isolation none --save-baseline --json "$OUT/bench_$p.json" > "$OUT/bench_$p.txt" 2>&1
        echo "bench $p rc=$?"; cp baselines/*-"nvfp4_$p".json "$OUT/" 2>/dev/null
    done
    ;;
new)
    # Correctness first, in parallel (no timing runs meanwhile): the sanitizer tests (planted kernels and honest
    # submissions under memcheck, racecheck, initcheck), the GPU tests of the problem kernels, verify of the
    # three problems (honest submission, sm90 kernel, baselines) on their test cases and of mxfp8 on the
    # verify shapes. Then, alone on the GPU, the benchmark cases timed. Eight files in $OUT.
    python3 -m pytest -q -rs -p no:cacheprovider tests/test_sanitize.py -m "gpu and not slow" \
        > "$OUT/gpu_tests.txt" 2>&1 &
    tests=$!
    python3 -m pytest -q -rs -p no:cacheprovider -m gpu tests/test_sm90_problems.py tests/test_problems.py \
        > "$OUT/gpu_tests_problems.txt" 2>&1 &
    tests2=$!
    (for p in gemv dual_gemm group_gemm; do
        fp4 verify --problem "nvfp4_$p" --group tests --device cuda --seeds 1 -q --isolation none \
            --kernel "tests/fixtures/problems/${p}_correct.py,sm90-*,torch-ref,cublas-dense"
        echo "verify $p rc=$?"
    done) > "$OUT/verify.txt" 2>&1 &
    verify=$!
    fp4 verify --device cuda --shapes shapes/verify.yml --format mxfp8 --seeds 1 -q --isolation none \
        --kernel 'sm90-mxfp8*' --kernel torch-scaled-fp8 --kernel cublas-dense > "$OUT/log.txt" 2>&1
    echo "verify mxfp8 rc=$?" >> "$OUT/log.txt"
    wait $verify $tests2 $tests
    for f in gpu_tests gpu_tests_problems; do echo "$f: $(tail -1 "$OUT/$f.txt")"; done
    grep -E "rc=|passed" "$OUT/verify.txt" "$OUT/log.txt"
    for p in gemv dual_gemm group_gemm; do
        fp4 run --problem "nvfp4_$p" --group benchmarks --device cuda --kernels 'sm90-*,cublas-dense' \
            --budget 0.2 -q --isolation none --json "$OUT/bench_$p.json" >> "$OUT/log.txt" 2>&1
        echo "bench $p rc=$?" | tee -a "$OUT/log.txt"
    done
    fp4 run --shapes shapes/task.yml --group benchmarks --format mxfp8 --budget 0.2 -q --isolation none \
        --kernels 'sm90-mxfp8*,torch-scaled-fp8,cublas-dense' --json "$OUT/bench_mxfp8.json" >> "$OUT/log.txt" 2>&1
    echo "bench mxfp8 rc=$?" | tee -a "$OUT/log.txt"
    ;;
integrity)
    python3 -m pytest -q -rs -p no:cacheprovider -m gpu tests/test_timed_integrity.py \
        > "$OUT/integrity_gpu_tests.txt" 2>&1; echo "integrity GPU tests rc=$? ($(tail -1 "$OUT/integrity_gpu_tests.txt"))"
    P=tests/fixtures/kernels
    CHEATS=(address_cache timed_shape_cache call_count warmup_detect nan_reference copies_reference reference_import
            reference_at_call dense_mm chunked_mm scaled_mm private_stream side_stream_work l2_persist prepare_hook)
    HONEST=(correct fresh_output nondeterministic)
    list=$(printf "$P/%s.py," "${CHEATS[@]}" "${HONEST[@]}")
    fp4 run --device cuda --shapes shapes/verify.yml --format nvfp4 --kernels "${list%,},cublas-dense,torch-ref" \
        --budget 0.2 -q --json "$OUT/integrity_cheats.json" > "$OUT/integrity_cheats.txt" 2>&1
    echo "cheats and honest submissions on verify.yml rc=$? (1 expected: every cheat fails)"
    # One line per case (kernel, shape, status, the class: the reason's first word, a seed prefix left off).
    python3 -c "import json, re, sys
for c in json.load(open(sys.argv[1]))['cases']:
    s, why = c['shape'], re.sub(r'^seed [0-9]+: ', '', c['reason'] or '-')
    shape = f\"{s['m']}x{s['n']}x{s['k']}x{s['l']}\"
    print(f\"{c['kernel']:18} {shape:14} {c['status']:5} {why.split(':')[0]:22} {why[:36]}\")
" "$OUT/integrity_cheats.json" | sort -k1,1 -s > "$OUT/integrity_classes.txt"
    awk '{print $1, $3, $4}' "$OUT/integrity_classes.txt" | sort | uniq -c
    fp4 verify --device cuda --format all --seeds 1 -q > "$OUT/integrity_verify.txt" 2>&1
    echo "verify every kernel rc=$? ($(tail -1 "$OUT/integrity_verify.txt"))"
    ;;
integrity-bench)
    began=$(date +%s)
    fp4 run "${BENCH[@]}" --json "$OUT/integrity_bench.json" > "$OUT/integrity_bench.txt" 2>&1
    echo "bench rc=$? in $(( $(date +%s) - began )) s"
    fp4 compare baselines/ "$OUT/integrity_bench.json" > "$OUT/integrity_compare.md" 2>&1
    echo "compare with the stored baselines rc=$? ($(tail -1 "$OUT/integrity_compare.md"))"
    grep -E "geomean" "$OUT/integrity_bench.txt" | head -40
    fp4 run --shapes shapes/task.yml --group benchmarks --format mxfp8 --budget 0.5 -q \
        --kernels 'sm90-mxfp8*,torch-scaled-fp8,cublas-dense' --json "$OUT/integrity_mxfp8.json" \
        > "$OUT/integrity_mxfp8.txt" 2>&1; echo "bench mxfp8 rc=$?"
    fp4 compare baselines/nvidia-h200-mxfp8.json "$OUT/integrity_mxfp8.json" > "$OUT/integrity_compare_mxfp8.md" 2>&1
    echo "compare mxfp8 rc=$? ($(tail -1 "$OUT/integrity_compare_mxfp8.md"))"
    for p in gemv dual_gemm group_gemm; do
        fp4 run --problem "nvfp4_$p" --group benchmarks --device cuda --kernels 'sm90-*,cublas-dense,torch-dequant-mm' \
            --budget 0.3 -q --json "$OUT/integrity_bench_$p.json" > "$OUT/integrity_bench_$p.txt" 2>&1
        echo "bench $p rc=$?"
        fp4 compare baselines/ "$OUT/integrity_bench_$p.json" > "$OUT/integrity_compare_$p.md" 2>&1
        echo "compare $p rc=$? ($(tail -1 "$OUT/integrity_compare_$p.md"))"
    done
    ;;
peers)
    python3 -m pytest -q -rs -s -p no:cacheprovider -m gpu tests/test_peers.py > "$OUT/pytest_peers.txt" 2>&1
    echo "pytest peers rc=$?"
    printf 'peers:\n  - {m: 128, n: 7168, k: 16384}\n  - {m: 16, n: 7168, k: 16384}\n' > "$OUT/peers.yml"
    for mode in eager graph; do
        fp4 run --shapes "$OUT/peers.yml" --format w4a16-nvfp4,w4a16-mxfp4,w4a8 --budget 0.5 -q \
            --kernels 'humming*,cublas-dense,sm90-w4a16' $([ $mode = graph ] && echo --graph) \
            --json "$OUT/peers_$mode.json" > "$OUT/peers_$mode.txt" 2>&1; echo "run peers $mode rc=$?"
    done
    tail -3 "$OUT/pytest_peers.txt"; cat "$OUT/peers_eager.txt" "$OUT/peers_graph.txt"
    ;;
*)
    echo "unknown stage $1" >&2; exit 2 ;;
esac
