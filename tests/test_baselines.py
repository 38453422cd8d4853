"""Baselines: correct on every format they claim, skipped with a reason where they cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fp4bench.arch import CPU, Target
from fp4bench.audit import copy_bits
from fp4bench.formats import gemm_format
from fp4bench.kernels import all_kernels, get_kernel
from fp4bench.pipeline import check_case
from fp4bench.problem import Shape, generate, poison_output
from fp4bench.reference import reference_gemm

REPO = Path(__file__).resolve().parent.parent
SHAPE = Shape(96, 80, 256, 2, seed=7)   # M and N off the usual tile multiples, two batches
HOPPER = Target("cuda", 0, (9, 0), "H100")


def test_baselines_are_registered_as_baselines():
    kernels = all_kernels()
    for name in ("torch-scaled-mm", "torch-scaled-fp8", "torch-dequant-mm", "cublas-dense", "triton-dot-scaled"):
        assert kernels[name].role == "baseline", name


@pytest.mark.parametrize("name", ["torch-dequant-mm", "cublas-dense"])
@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4", "w4a8", "mxfp8", "w4a16-nvfp4", "w4a16-mxfp4"])
def test_dense_baselines_pass_on_cpu(name, fmt):
    outcome = check_case(get_kernel(name), SHAPE, gemm_format(fmt), CPU, [7, 49])
    assert outcome.status == "pass", outcome.reason
    assert outcome.check.max_abs_err == outcome.check.max_abs_err   # a real comparison happened (not NaN)


@pytest.mark.parametrize("name, fmt", [("cublas-dense", "mxfp4"), ("cublas-dense", "nvfp4")])
def test_dense_operands_come_from_the_contents_not_the_addresses(name, fmt):
    # The same buffers refilled with other contents (as the timed calls' input sets are): the per-input-set
    # preparation runs again and the result is the new contents' product, never the old operands'.
    fmt = gemm_format(fmt)
    p1, p2 = generate(SHAPE, fmt), generate(SHAPE.with_seed(99), fmt)
    prepared = get_kernel(name).prepared(p1)
    buffers = poison_output(p1).data
    for p in (p1, p2, p1):
        for dst, src in zip(buffers[:6], p.data[:6]):
            copy_bits(dst, src)
        out = prepared(buffers)
        ref = reference_gemm(p).to(fmt.out_dtype).float()
        torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


def test_the_dense_baseline_prepares_outside_its_timed_callable():
    p = generate(SHAPE, gemm_format("nvfp4"))
    kernel = get_kernel("cublas-dense")
    data, dense = kernel.prepare_inputs(p, poison_output(p).data)
    assert dense[0][0][0].dtype == torch.float16 and dense[0][0][0].shape == (SHAPE.m, SHAPE.k)
    out = kernel.prepare(p)((data, dense))
    assert out is data[6] and torch.isfinite(out).all()


def test_torch_scaled_mm_is_skipped_on_hopper_and_cpu_with_the_reason():
    problem = generate(Shape(128, 256, 256), gemm_format("nvfp4"))
    k = get_kernel("torch-scaled-mm")
    reason = k.reason_to_skip(problem, HOPPER)
    assert reason == "needs sm_100, sm_103, sm_120 or sm_121; this GPU is sm_90"
    assert k.reason_to_skip(problem, CPU) == "needs sm_100, sm_103, sm_120 or sm_121; this machine has no GPU"
    assert k.math_path == "fp4"


def test_triton_dot_scaled_claims_only_e8m0_formats():
    k = get_kernel("triton-dot-scaled")
    assert set(k.formats) == {"mxfp4", "w4a8", "mxfp8", "w4a16-mxfp4"}
    problem = generate(Shape(128, 256, 256), gemm_format("nvfp4"))
    assert "does not support format nvfp4" in k.reason_to_skip(problem, HOPPER)


@pytest.mark.slow
def test_triton_dot_scaled_in_the_interpreter():
    """TRITON_INTERPRET must be set before Triton compiles anything: a fresh interpreter runs the check."""
    script = (
        "from fp4bench.arch import CPU\n"
        "from fp4bench.formats import gemm_format\n"
        "from fp4bench.pipeline import check_case\n"
        "from fp4bench.kernels import get_kernel\n"
        "from fp4bench.problem import Shape\n"
        "for f in ('mxfp4', 'mxfp8', 'w4a16-mxfp4'):\n"
        "    o = check_case(get_kernel('triton-dot-scaled'), Shape(96, 80, 160), gemm_format(f), CPU, [3])\n"
        "    print(f, o.status, o.reason)\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["mxfp4", "pass", "None", "mxfp8", "pass", "None", "w4a16-mxfp4", "pass", "None"], \
        out.stdout


@pytest.mark.gpu
@pytest.mark.parametrize("name, fmt", [("cublas-dense", "nvfp4"), ("torch-scaled-fp8", "mxfp8"), ("torch-dequant-mm", "mxfp4"),
                                       ("triton-dot-scaled", "mxfp4"), ("triton-dot-scaled", "w4a8"),
                                       ("triton-dot-scaled", "mxfp8")])
def test_baselines_pass_on_the_gpu(name, fmt):
    from fp4bench.arch import current_target

    outcome = check_case(get_kernel(name), Shape(256, 384, 1024), gemm_format(fmt), current_target("cuda"), [1, 43])
    assert outcome.status in ("pass", "skip"), outcome.reason
