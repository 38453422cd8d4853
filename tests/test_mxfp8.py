"""The mxfp8 GEMM format (MXFP8 x MXFP8 -> bf16): its inputs, reference and check; the tensorwise fp8 baseline
and its declared approximation bound; sm90-mxfp8-fp8's kernel interpreted on the CPU. Every check draws fresh
random data, poisons the output with NaN, and has a planted bug it must catch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fp4bench import codecs, layouts
from fp4bench.arch import CPU, Target
from fp4bench.checking import check_output
from fp4bench.formats import E4M3_MAX, E8M0_BIAS, MXFP8, gemm_format
from fp4bench.kernels import get_kernel
from fp4bench.kernels.baselines import requantize_tensorwise
from fp4bench.pipeline import expected_for
from fp4bench.problem import MX_SCALE_EXPONENTS, Shape, generate, poison_output
from fp4bench.reference import reference_gemm

REPO = Path(__file__).resolve().parent.parent
FMT = gemm_format("mxfp8")
HOPPER = Target("cuda", 0, (9, 0), "H100")
ADA = Target("cuda", 0, (8, 9), "L40S")
AMPERE = Target("cuda", 0, (8, 0), "A100")


def test_the_format_is_mxfp8_on_both_sides_with_bf16_output():
    assert FMT.a is MXFP8 and FMT.b is MXFP8 and FMT.out_dtype == torch.bfloat16
    assert FMT.k_multiple == 32 and FMT.compute_dtype == torch.bfloat16


def test_inputs_are_e4m3_without_nan_and_e8m0_scales_in_range_in_the_blocked_layout():
    p = generate(Shape(130, 72, 1056, 2, seed=5), FMT)
    lo, hi = MX_SCALE_EXPONENTS
    for x, sf, perm, rows in ((p.a, p.sfa, p.data[4], 130), (p.b, p.sfb, p.data[5], 72)):
        assert x.dtype == torch.float8_e4m3fn and tuple(x.shape) == (rows, 1056, 2) and x.stride(1) == 1
        raw = codecs.as_bytes(x)
        assert ((raw & 0x7F) != 0x7F).all() and raw.unique().numel() > 250
        assert sf.dtype == torch.float8_e8m0fnu and tuple(sf.shape) == (rows, 33, 2)
        codes = codecs.as_bytes(sf).int() - E8M0_BIAS
        assert int(codes.min()) == lo and int(codes.max()) == hi
        for i in range(2):
            back = layouts.from_competition(perm, rows, 33)[:, :, i]
            assert torch.equal(codecs.as_bytes(back), codecs.as_bytes(sf[:, :, i].contiguous()))


def test_reference_is_exact_products_in_float64():
    """Each dequantized value is e4m3 x 2^e (exact in float32); float64 sums of these K are exact."""
    p = generate(Shape(16, 24, 256, seed=3), FMT)
    a = codecs.as_bytes(p.a[:, :, 0]).view(torch.float8_e4m3fn).double()
    b = codecs.as_bytes(p.b[:, :, 0]).view(torch.float8_e4m3fn).double()
    sa = torch.pow(2.0, codecs.as_bytes(p.sfa[:, :, 0]).double() - E8M0_BIAS).repeat_interleave(32, dim=1)
    sb = torch.pow(2.0, codecs.as_bytes(p.sfb[:, :, 0]).double() - E8M0_BIAS).repeat_interleave(32, dim=1)
    by_hand = (a * sa) @ (b * sb).T
    assert torch.equal(reference_gemm(p, torch.float64)[:, :, 0], by_hand)


def test_the_check_catches_one_wrong_block_scale():
    p = generate(Shape(64, 96, 512, seed=8), FMT)
    exact = reference_gemm(p).to(FMT.out_dtype)
    expected = expected_for(None, p)
    assert check_output(exact, expected.values, FMT.out_dtype, allowance=expected.allowance).passed
    sfb = p.sfb.clone()
    sfb[5, 3, 0] = torch.tensor(2.0 ** (int(codecs.as_bytes(sfb[5, 3, 0])) - E8M0_BIAS + 1)).to(sfb.dtype)
    wrong = reference_gemm(p.__class__(p.shape, FMT, p.data[:3] + (sfb,) + p.data[4:])).to(FMT.out_dtype)
    bad = check_output(wrong, expected.values, FMT.out_dtype, allowance=expected.allowance)
    assert not bad.passed and {tuple(f["index"])[1] for f in bad.first_mismatches} == {5}


# ---------------------------------------------------------------------------------------------------------
# torch-scaled-fp8: requantized, so checked within its declared bound
# ---------------------------------------------------------------------------------------------------------
def test_tensorwise_requantization_is_exact_in_the_normal_range_and_bounded_below_it():
    x = codecs.dequantize(*codecs.quantize(torch.randn(64, 256) * 8, MXFP8), MXFP8)
    q, scale = requantize_tensorwise(x)
    assert scale == 2.0 ** torch.ceil(torch.log2(x.abs().max() / E4M3_MAX)).item()
    back = q.float() * scale
    normal = (x / scale).abs() >= 2.0 ** -6
    assert torch.equal(back[normal], x[normal])
    assert ((back - x).abs()[~normal] <= 2.0 ** -10 * scale).all()


def test_tensorwise_baseline_runs_only_on_fp8_tensor_cores_and_with_n_and_k_multiples_of_16():
    k = get_kernel("torch-scaled-fp8")
    assert k.role == "baseline" and k.formats == ("mxfp8",) and k.math_path == "fp8"
    assert k.unavailable_reason(HOPPER) is None and k.unavailable_reason(ADA) is None
    assert k.unavailable_reason(AMPERE).startswith("needs sm_89, sm_90, sm_100, sm_103, sm_120 or sm_121")
    assert k.can_implement(generate(Shape(77, 200, 96), FMT)) == "N=200 not a multiple of 16 (cuBLAS fp8 GEMM)"
    assert k.can_implement(generate(Shape(64, 128, 256), FMT)) is None


def test_tensorwise_baseline_needs_its_bound_and_the_bound_still_catches_a_wrong_block():
    """On the CPU (torch's own fp8 _scaled_mm, fp32 accumulation): the exact check fails, the declared bound
    passes, and a planted bug (one block of B dropped) fails even with the bound."""
    k = get_kernel("torch-scaled-fp8")
    p = generate(Shape(128, 256, 256, 2, seed=1111), FMT)
    out = k.prepared(p)(poison_output(p).data).clone()
    exact = expected_for(None, p)
    declared = expected_for(k, p)
    assert not check_output(out, exact.values, FMT.out_dtype, allowance=exact.allowance).passed
    assert check_output(out, declared.values, FMT.out_dtype, allowance=declared.allowance).passed
    b = p.b.clone()
    b[:, 64:96, 1] = 0
    broken = k.prepared(p)(poison_output(p).data[:1] + (b,) + p.data[2:6] + (p.c.clone(),))
    assert not check_output(broken, declared.values, FMT.out_dtype, allowance=declared.allowance).passed


# ---------------------------------------------------------------------------------------------------------
# sm90-mxfp8-fp8 under Triton's interpreter
# ---------------------------------------------------------------------------------------------------------
INTERPRETED = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
    from exactness import check_exact_products, extreme_problem
    from fp4bench.arch import CPU
    from fp4bench.checking import check_output
    from fp4bench.formats import E8M0_BIAS, gemm_format
    from fp4bench.kernels import get_kernel
    from fp4bench.pipeline import check_case
    from fp4bench.problem import Shape, generate, poison_output
    from fp4bench.reference import reference_gemm

    fmt = gemm_format("mxfp8")
    for name in ("sm90-mxfp8-fp8", "sm90-mxfp8"):
        kernel = get_kernel(name)
        assert kernel.unavailable_reason(CPU) == "needs sm_90; this machine has no GPU", name
        for shape in (Shape(40, 72, 160, 2, seed=3), Shape(33, 17, 96, seed=4), Shape(1, 48, 32, seed=5)):
            p = generate(shape, fmt)
            assert kernel.launch_config(p)["split_k"] == min(2, -(-shape.k // 64)), kernel.launch_config(p)
            out = kernel.prepare(p)(poison_output(p).data)
            ok, detail = check_exact_products(out, p)
            assert ok, (name, shape, detail)
    kernel = get_kernel("sm90-mxfp8-fp8")
    # Extreme block scales (2^-20..2^20) and a NaN scale: that row is NaN, the rest exact.
    p = extreme_problem(Shape(48, 40, 192, seed=9), "mxfp8", 20, "cpu")
    sfa_perm = p.data[4]
    sfa_perm[7, 0, 0, 2, 0, 0] = torch.tensor(0xFF, dtype=torch.uint8).view(sfa_perm.dtype)
    p.sfa[7, 2, 0] = torch.tensor(0xFF, dtype=torch.uint8).view(p.sfa.dtype)
    out = kernel.prepare(p)(poison_output(p).data)
    assert torch.isnan(out[7]).all() and not torch.isnan(out[:7]).any() and not torch.isnan(out[8:]).any()
    ok, detail = check_exact_products(out, p)
    assert ok, detail
    # A planted bug: one scale byte in the blocked bytes the kernel reads, not in the reference's row-major copy.
    p = generate(Shape(64, 96, 256, seed=123), fmt)
    fn = kernel.prepare(p)
    sfb_perm = p.data[5]
    sfb_perm[3, 0, 0, 0, 1, 0] = torch.tensor(E8M0_BIAS + 6, dtype=torch.uint8).view(sfb_perm.dtype)
    bad = check_output(fn(poison_output(p).data), reference_gemm(p), fmt.out_dtype)
    assert not bad.passed and {tuple(f["index"])[1] for f in bad.first_mismatches} == {3}, bad.reason
    print("OK")
""")


@pytest.mark.slow
def test_sm90_mxfp8_interpreted_is_exact_and_catches_a_wrong_scale():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", INTERPRETED], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_sm90_mxfp8_variants_are_skipped_off_hopper_with_the_reason():
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("the interpreter makes the Triton kernels runnable on the CPU")
    for name in ("sm90-mxfp8-fp8", "sm90-mxfp8"):
        k = get_kernel(name)
        assert k.formats == ("mxfp8",) and k.archs == ("sm_90a",)
        assert k.unavailable_reason(CPU) == "needs sm_90; this machine has no GPU"
        assert k.unavailable_reason(Target("cuda", 0, (12, 0), "RTX 5090")) == "needs sm_90; this GPU is sm_120"
    assert get_kernel("sm90-mxfp8-fp8").math_path == "fp8" and get_kernel("sm90-mxfp8").math_path == "bf16"


def test_sm90_mxfp8_has_a_heuristic_config_for_every_shape():
    k = get_kernel("sm90-mxfp8-fp8")
    p = generate(Shape(128, 256, 256), FMT)
    config, source = k.chosen_config(p)
    assert source == "heuristic" and config["block_k"] % 32 == 0
    assert all(c["block_k"] % 32 == 0 for c in k.tuning_candidates(p))


# ---------------------------------------------------------------------------------------------------------
# sm90-mxfp8-fp8 compiled for sm_90a here (no GPU needed): fp8 wgmma from shared memory, no local memory
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("mma,instruction", [("float8e4nv", r"QGMMA\.64x128x32\.F32\.E4M3\.E4M3 R\d+, gdesc"),
                                             ("bfloat16", r"HGMMA\.64x128x16\.F32\.BF16")])
def test_sm90_mxfp8_compiles_for_sm90a_to_wgmma_without_spills(mma, instruction):
    import re

    import triton.language as tl
    from triton_aot import compile_for, nvdisasm_path, sass

    from fp4bench.kernels.fp4_triton.launch import MXFP8_GPU_CANDIDATES
    from fp4bench.kernels.fp4_triton.mxfp8 import mxfp8_kernel

    if nvdisasm_path() is None:
        pytest.skip("needs nvdisasm (Triton's bundled copy or the CUDA toolkit's)")
    cfg = MXFP8_GPU_CANDIDATES[0]
    pointers = dict(zip(mxfp8_kernel.arg_names[:7], ("*fp8e4nv", "*fp8e4nv", "*u8", "*u8", "*bf16", "*fp32", "*i32")))
    types = {n: pointers.get(n, "i32") for n in mxfp8_kernel.arg_names}
    constexprs = {"stride_ak": 1, "stride_bk": 1, "stride_cn": 1, "MMA_DTYPE": getattr(tl, mma),
                  "BLOCK_N": cfg.block_n, "BLOCK_M": 128, "BLOCK_K": cfg.block_k}
    divisible = tuple(pointers) + ("stride_am", "stride_al", "stride_bn", "stride_bl", "stride_sal", "stride_sbl",
                                   "stride_cm", "stride_cl", "K", "N")
    code = sass(compile_for(mxfp8_kernel, 90, types, constexprs, divisible, cfg.num_warps, cfg.num_stages))
    assert re.search(instruction, code), code[:2000]
    # One MMA per 32-deep block of a K tile, each from a zeroed accumulator (RZ): the per-block promotion.
    per_block = len(re.findall(r"[QH]GMMA\.\S+ R\d+, (?:R\d+, )?gdesc\[\w+\], RZ", code))
    assert per_block == cfg.block_k // 32, per_block
    if mma == "float8e4nv":   # the timed variant; the bf16 one is the exactness yardstick and may spill a little
        assert not re.search(r"\b(LDL|STL)\b", code), "register spills"
