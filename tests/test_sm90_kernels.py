"""The Hopper Triton kernels: split-K planning, the fp8 kernel's exactness with extreme scales (interpreted
on the CPU), and GPU tests (marked `gpu`) of every sm90-* kernel on edge shapes, extreme scales and a
benchmark shape. Every check uses fresh random data and a NaN-poisoned output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from fp4bench.kernels.fp4_triton.gemm_fp8 import FP8_FIT_BINADES
from fp4bench.kernels.fp4_triton.launch import choose_split_k

REPO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# A helper run in a fresh process (Triton decides at import whether to interpret): builds problems whose
# block exponents spread over +-SPREAD binades and checks one kernel launch against the exact reference.
EXTREME_SCRIPT = textwrap.dedent("""
    import json, os, sys, torch
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    from exactness import check_exact_products
    from fp4bench.formats import E8M0_BIAS, GEMM_FORMATS
    from fp4bench.kernels.fp4_triton.launch import CPU_CONFIG, launch_gemm, resolve
    from fp4bench.problem import Shape, assemble, generate, poison_output
    from fp4bench.reference import reference_gemm

    def problem(shape, spread, nan_rows=()):
        fmt = GEMM_FORMATS["mxfp4"]
        p = generate(shape, fmt, "cpu")
        def codes(like):
            c = torch.randint(E8M0_BIAS - spread, E8M0_BIAS + spread + 1, (like.shape[2], like.shape[0], like.shape[1]))
            for r in nan_rows:
                c[0, r, 1] = 0xFF
            return c.to(torch.uint8).view(like.dtype).permute(1, 2, 0)
        a, b, sfa, sfb = p.data[:4]
        return assemble(shape, fmt, a, b, codes(sfa), codes(sfb), p.c, "cpu")

    results = []
    for spread, shape, nan_rows in json.loads(sys.argv[1]):
        torch.manual_seed(1000 + spread)
        shape = Shape(*shape)
        p = problem(shape, spread, nan_rows)
        plan = resolve(CPU_CONFIG, shape, torch.device("cpu"))
        out = launch_gemm(poison_output(p).data, shape, p.fmt, plan, use_asm=False, fp8=True)
        passed, reason = check_exact_products(out, p)
        results.append({"spread": spread, "passed": passed, "reason": reason,
                        "nan_rows_ok": all(bool(torch.isnan(out[row]).all()) for row in nan_rows),
                        "finite": int(torch.isfinite(out).sum()), "split": plan.split_k})
    print(json.dumps(results))
""")


@pytest.mark.parametrize("tiles,k_iters,sms,expected", [
    (56, 128, 132, 7),    # 128 x 7168 x 16384 with 128-row tiles: 392 programs, 99% of 3 waves
    (32, 56, 132, 4),     # 128 x 4096 x 7168: 128 programs in one wave
    (132, 64, 132, 1),    # already one full wave: no split
    (1, 1, 132, 1),       # one K tile cannot be split
])
def test_split_k_fills_whole_waves(tiles, k_iters, sms, expected):
    assert choose_split_k(tiles, k_iters, sms) == expected


def test_fp8_kernel_is_exact_for_extreme_scale_spreads_interpreted():
    # spread 1: every K tile fits e4m3 (residual <= 2 < FP8_FIT_BINADES); 7, 20 and 60: many tiles take the
    # bf16 path; the last case puts NaN scales in rows 3 and 10 of A.
    assert 2 * 1 < FP8_FIT_BINADES <= 2 * 7
    cases = [(1, (40, 48, 512), []), (7, (40, 48, 512), []), (20, (40, 48, 512), []), (60, (33, 40, 256, 2), []),
             (3, (16, 32, 256), [3, 10])]
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", EXTREME_SCRIPT, json.dumps(cases)], capture_output=True,
                          text=True, env=env, timeout=900, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == len(cases)
    for (_spread, shape, nan_rows), r in zip(cases, results):
        if nan_rows:
            assert r["nan_rows_ok"], r
        assert r["passed"], r
        assert r["split"] >= 2 or shape[2] <= 64, r   # split-K is exercised


# ---------------------------------------------------------------------------------------------------------
# GPU tests
# ---------------------------------------------------------------------------------------------------------
# The CUDA kernels (sm90-nvfp4, sm90-mxfp4, sm90-w4a16) and their Triton twins.
SM90_CASES = [("sm90-nvfp4", "nvfp4"), ("sm90-nvfp4", "nvfp4-bf16"), ("sm90-mxfp4", "mxfp4"),
              ("sm90-w4a16", "w4a16-nvfp4"), ("sm90-w4a16", "w4a16-mxfp4"),
              ("sm90-nvfp4-triton", "nvfp4"), ("sm90-mxfp4-triton", "mxfp4"), ("sm90-mxfp4-fp8", "mxfp4"),
              ("sm90-w4a16-triton", "w4a16-nvfp4"), ("sm90-w4a16-triton", "w4a16-mxfp4"), ("triton-fp4", "nvfp4"),
              ("triton-fp4", "mxfp4"), ("sm90-mxfp8-fp8", "mxfp8"), ("sm90-mxfp8", "mxfp8")]
GPU_SHAPES = [(1, 128, 256, 1), (77, 200, 96, 1), (130, 129, 32, 1), (200, 72, 1056, 1), (256, 384, 512, 3),
              (64, 96, 16384, 1)]


@pytest.mark.gpu
@pytest.mark.parametrize("name,fmt_name", SM90_CASES)
def test_sm90_kernels_verify_on_edge_shapes(name, fmt_name, hopper_target):
    from fp4bench.formats import GEMM_FORMATS
    from fp4bench.kernels import get_kernel
    from fp4bench.pipeline import check_case
    from fp4bench.problem import Shape

    target = hopper_target
    for m, n, k, l in GPU_SHAPES:
        outcome = check_case(get_kernel(name), Shape(m, n, k, l), GEMM_FORMATS[fmt_name], target, [11, 53])
        assert outcome.status == "pass", (m, n, k, l, outcome.reason)


@pytest.mark.gpu
@pytest.mark.parametrize("name,fmt_name,spread", [
    ("sm90-mxfp4-fp8", "mxfp4", 1), ("sm90-mxfp4-fp8", "mxfp4", 7), ("sm90-mxfp4-fp8", "mxfp4", 20),
    ("sm90-mxfp4-fp8", "mxfp4", 60),
    ("sm90-mxfp4", "mxfp4", 60), ("sm90-w4a16", "w4a16-mxfp4", 60), ("sm90-nvfp4", "nvfp4", None),
    ("sm90-w4a16", "w4a16-nvfp4", None), ("sm90-mxfp4-triton", "mxfp4", 60), ("sm90-w4a16-triton", "w4a16-mxfp4", 60),
    ("sm90-nvfp4-triton", "nvfp4", None), ("sm90-w4a16-triton", "w4a16-nvfp4", None),
    ("sm90-mxfp8-fp8", "mxfp8", 20), ("sm90-mxfp8", "mxfp8", 60),
])
def test_sm90_kernels_exact_with_extreme_scales(name, fmt_name, spread, hopper_target):
    from exactness import check_exact_products, extreme_problem

    from fp4bench.kernels import get_kernel
    from fp4bench.problem import Shape, poison_output

    kernel = get_kernel(name)
    for shape in (Shape(200, 520, 2048, seed=5), Shape(128, 256, 8192, seed=9)):
        p = extreme_problem(shape, fmt_name, spread, "cuda")
        out = kernel.prepare(p)(poison_output(p).data)
        torch.cuda.synchronize()
        passed, detail = check_exact_products(out, p)
        assert passed, (shape, detail)


@pytest.mark.gpu
@pytest.mark.slow
def test_sm90_nvfp4_on_a_benchmark_shape_twice(hopper_target):
    from fp4bench.checking import check_output
    from fp4bench.formats import GEMM_FORMATS
    from fp4bench.kernels import get_kernel
    from fp4bench.problem import Shape, generate, poison_output
    from fp4bench.reference import reference_gemm

    kernel = get_kernel("sm90-nvfp4")
    # Twice on fresh data: the split-K counters must be back at zero after each call.
    for seed in (1111, 1153):
        p = generate(Shape(128, 4096, 7168, seed=seed), GEMM_FORMATS["nvfp4"], "cuda")
        fn = kernel.prepare(p)
        out = fn(poison_output(p).data)
        torch.cuda.synchronize()
        r = check_output(out, reference_gemm(p), torch.float16)
        assert r.passed, r.reason


VARIANTS_SCRIPT = textwrap.dedent("""
    import json, torch
    from fp4bench.checking import check_output
    from fp4bench.formats import GEMM_FORMATS
    from fp4bench.kernels.fp4_triton.launch import LaunchConfig, launch_gemm, resolve
    from fp4bench.problem import Shape, generate, poison_output
    from fp4bench.reference import reference_gemm

    out = []
    for join_k in (False, True):
        for fmt_name in ("nvfp4", "mxfp4", "w4a16-mxfp4"):
            for pre in (False, True):
                cfg = LaunchConfig(32, 128, 4, 1, max_block_m=32, join_k=join_k, pre_dequant_a=pre)
                fmt = GEMM_FORMATS[fmt_name]
                shape = Shape(45, 40, 384, 2, seed=len(out) + 5)
                p = generate(shape, fmt)
                plan = resolve(cfg, shape, torch.device("cpu"))
                r = check_output(launch_gemm(poison_output(p).data, shape, fmt, plan, use_asm=False),
                                 reference_gemm(p), fmt.out_dtype)
                out.append([join_k, fmt_name, pre, plan.split_k, r.passed, r.reason])
    print(json.dumps(out))
""")


def test_join_k_and_pre_dequantized_a_variants_interpreted():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", VARIANTS_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=900, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 12
    for join_k, fmt_name, pre, split, passed, reason in results:
        assert split >= 2, "split-K must be exercised"
        assert passed, (join_k, fmt_name, pre, reason)


W4A16_SCRIPT = textwrap.dedent("""
    import json, torch
    from fp4bench.checking import check_output
    from fp4bench.formats import GEMM_FORMATS
    from fp4bench.kernels.fp4_triton import w4a16
    from fp4bench.problem import Shape, generate, poison_output
    from fp4bench.reference import reference_gemm

    out = []
    for fmt_name in ("w4a16-nvfp4", "w4a16-mxfp4"):
        fmt = GEMM_FORMATS[fmt_name]
        for shape, word_scales, split in ((Shape(45, 40, 384, 2, seed=5), True, 2),
                                          (Shape(16, 64, 256, 1, seed=6), False, 1),
                                          (Shape(20, 33, 96, 1, seed=7), True, 3)):
            p = generate(shape, fmt)
            cfg = {**w4a16.CPU_CONFIG, "word_scales": word_scales, "split_k": split}
            if shape.k % cfg["block_k"]:
                cfg["block_k"] = 32
            run = w4a16.prepare_w4a16(p.data, shape, fmt.b.scale.power_of_two, fmt.b.block_size, cfg, True)
            first = check_output(run(poison_output(p).data), reference_gemm(p), fmt.out_dtype)
            again = check_output(run(poison_output(p).data), reference_gemm(p), fmt.out_dtype)
            out.append([fmt_name, str(shape), first.passed and again.passed, first.reason or again.reason])
    print(json.dumps(out))
""")


def test_w4a16_register_decoding_kernel_interpreted():
    """sm90-w4a16's kernel under the interpreter (the same bit manipulation as its PTX, in float32):
    both weight formats, masked M/N/K edges, batches, split-K with the counters reset between calls."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", W4A16_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=900, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 6
    for fmt_name, shape, passed, reason in results:
        assert passed, (fmt_name, shape, reason)
