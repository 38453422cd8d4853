"""How much sm90-mxfp8-fp8's fp8 MMA loses in one 32-deep block, against the exact sums, on an H100/H200.

Runs the sm90-mxfp8-fp8 kernel's per-block-promotion GEMM with fp8 wgmma and with bf16 wgmma (exact) into an fp32
output (no bf16 rounding to hide the difference) and compares each with the float64 reference on:
  random       the tool's own inputs (e4m3 bytes uniform, e8m0 2^-3..2^3);
  quantized    standard normal data quantized to MXFP8 (codecs.quantize): what a checkpoint looks like;
  adversarial  per block, two products of +-448*448 that cancel and 30 mid-sized ones (2^0..2^8): the block
               sum is exactly the mid-sized terms, which a narrow MMA window truncates.
Per case: the tool's check of the bf16-rounded output (mismatches), the largest error relative to
sum|a b| (in powers of two: -24 is fp32's own rounding) and relative to |C| where |C| >= 2^-10 sum|a b|.
Then what exactness costs, whatever the checks said: the benchmark shapes timed with triton.testing.do_bench
(L2 flushed between calls; the heuristic launch) on fp8 and on bf16 MMA, and cuBLAS bf16 on dense operands.
Usage: python scripts/mxfp8_accumulation.py [--shapes M,N,K ...]   (needs an sm_90 GPU; ~15 s)
"""

from __future__ import annotations

import argparse
import math

import torch
import triton.language as tl

from fp4bench.checking import check_output
from fp4bench.codecs import quantize
from fp4bench.formats import MXFP8, gemm_format
from fp4bench.kernels.fp4_triton.launch import MXFP8_GPU_CANDIDATES, launch_mxfp8, resolve
from fp4bench.problem import Shape, assemble, generate
from fp4bench.reference import expected_output, reference_gemm

FMT = gemm_format("mxfp8")
DEFAULT_SHAPES = ("128,256,256", "256,384,512", "128,512,2048", "128,7168,2048", "128,4096,7168")
BENCHMARK_SHAPES = (Shape(128, 7168, 16384), Shape(128, 4096, 7168), Shape(128, 7168, 2048))


def _from_values(shape: Shape, a_vals: torch.Tensor, b_vals: torch.Tensor, device) -> object:
    """A problem whose operands are MXFP8 quantizations of float [rows, K] values (L = 1)."""
    (qa, sa), (qb, sb) = quantize(a_vals, MXFP8), quantize(b_vals, MXFP8)
    c = torch.empty((shape.m, shape.n, 1), dtype=FMT.out_dtype, device=device)
    return assemble(shape, FMT, qa[:, :, None], qb[:, :, None], sa[:, :, None], sb[:, :, None], c, device)


def quantized(shape: Shape, device):
    g = torch.Generator(device="cpu").manual_seed(shape.seed)
    a = torch.randn((shape.m, shape.k), generator=g)
    b = torch.randn((shape.n, shape.k), generator=g)
    return _from_values(shape, a.to(device), b.to(device), device)


def adversarial(shape: Shape, device):
    g = torch.Generator(device="cpu").manual_seed(shape.seed)
    k = shape.k
    # e4m3 values with 4 significant bits: mid-sized magnitudes 2^0..2^4 on both sides.
    def mid(rows):
        mant = torch.randint(8, 16, (rows, k), generator=g).float() / 8
        exp = torch.randint(0, 5, (rows, k), generator=g).float()
        sign = torch.randint(0, 2, (rows, k), generator=g).float() * 2 - 1
        return sign * mant * torch.pow(2.0, exp)
    a, b = mid(shape.m), mid(shape.n)
    # Positions 0 and 1 of every block: +448 * 448 and -448 * 448 for every (row, column) pair.
    a[:, 0::32], a[:, 1::32] = 448.0, 448.0
    b[:, 0::32], b[:, 1::32] = 448.0, -448.0
    return _from_values(shape, a.to(device), b.to(device), device)


def measure(problem, mma) -> dict:
    s = problem.shape
    out = torch.full((s.m, s.n, s.l), float("nan"), dtype=torch.float32, device=problem.c.device)
    plan = resolve(MXFP8_GPU_CANDIDATES[0], s, problem.c.device)
    launch_mxfp8(problem.data[:6] + (out,), s, plan, mma)
    torch.cuda.synchronize()
    ref = reference_gemm(problem, torch.float64)
    mag = reference_gemm(problem, torch.float64, magnitude=True)
    err = (out.double() - ref).abs()
    rel_mag = float((err / mag.clamp_min(1e-300)).max())
    sizable = ref.abs() >= 2.0 ** -10 * mag
    rel_c = float((err / ref.abs().clamp_min(1e-300))[sizable].max()) if bool(sizable.any()) else 0.0
    expected = expected_output(problem)
    check = check_output(out.to(FMT.out_dtype), expected.values, FMT.out_dtype, allowance=expected.allowance)
    return {"mismatches": check.mismatches, "total": check.total,
            "log2_err_over_sum_abs": math.log2(rel_mag) if rel_mag > 0 else float("-inf"),
            "log2_err_over_c": math.log2(rel_c) if rel_c > 0 else float("-inf")}


def timings(shape: Shape, device) -> dict:
    """Median microseconds of the kernel on fp8 and on bf16 MMA and of a bf16 cuBLAS matmul on dense operands."""
    from triton.testing import do_bench

    from fp4bench.reference import dequantize_operands

    problem = generate(shape, FMT, device)
    plan = resolve(MXFP8_GPU_CANDIDATES[0], shape, device)
    out = {}
    for name, mma in (("fp8", tl.float8e4nv), ("bf16", tl.bfloat16)):
        out[name] = 1e3 * do_bench(lambda mma=mma: launch_mxfp8(problem.data, shape, plan, mma), return_mode="median")
    da, db = (x.to(torch.bfloat16) for x in dequantize_operands(problem.data, FMT, 0))
    c = problem.c[:, :, 0]
    out["cublas"] = 1e3 * do_bench(lambda: torch.matmul(da, db.T, out=c), return_mode="median")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=list(DEFAULT_SHAPES), help="M,N,K triples")
    args = parser.parse_args()
    device = torch.device("cuda")
    print(f"{'data':<12} {'shape':<16} {'mma':<5} {'check':>16} {'log2 err/sum|ab|':>17} {'log2 err/|C|':>13}")
    for text in args.shapes:
        m, n, k = (int(x) for x in text.split(","))
        shape = Shape(m, n, k)
        for kind, make in (("random", lambda s: generate(s, FMT, device)), ("quantized", lambda s: quantized(s, device)),
                           ("adversarial", lambda s: adversarial(s, device))):
            problem = make(shape)
            for name, mma in (("fp8", tl.float8e4nv), ("bf16", tl.bfloat16)):
                r = measure(problem, mma)
                check = "pass" if r["mismatches"] == 0 else f"{r['mismatches']} of {r['total']}"
                print(f"{kind:<12} {str(shape):<16} {name:<5} {check:>16} {r['log2_err_over_sum_abs']:>17.1f} "
                      f"{r['log2_err_over_c']:>13.1f}")
    print(f"\n{'shape':<16} {'fp8 MMA us':>11} {'bf16 MMA us':>12} {'cuBLAS bf16 us':>15} {'fp8 speedup':>12}")
    for shape in BENCHMARK_SHAPES:
        t = timings(shape, device)
        print(f"{str(shape):<16} {t['fp8']:>11.2f} {t['bf16']:>12.2f} {t['cublas']:>15.2f} "
              f"{t['cublas'] / t['fp8']:>11.2f}x")


if __name__ == "__main__":
    main()
