"""Test helpers for the Hopper kernels' exactness: problems with extreme block scales, and a check that tells
an inexact kernel from an ill-conditioned fp32 reference. Imported by tests (no test of its own)."""

from __future__ import annotations

import torch

from fp4bench.checking import check_output
from fp4bench.formats import E8M0_BIAS, GEMM_FORMATS
from fp4bench.problem import Shape, assemble, generate
from fp4bench.reference import dequantize_operands, reference_gemm


def extreme_problem(shape: Shape, fmt_name: str, spread: int | None, device) -> object:
    """A random problem whose scales are extreme: MX exponents in [-spread, spread], or every finite e4m3."""
    fmt = GEMM_FORMATS[fmt_name]
    p = generate(shape, fmt, device)
    a, b, sfa, sfb = p.data[:4]
    g = torch.Generator(device="cpu").manual_seed(shape.seed + 17)

    def scales(like):
        if like is None:
            return None
        shp = (like.shape[2], like.shape[0], like.shape[1])
        if fmt.b.scale.power_of_two:
            codes = torch.randint(E8M0_BIAS - spread, E8M0_BIAS + spread + 1, shp, generator=g)
        else:
            codes = torch.randint(0, 0x7F, shp, generator=g)   # every finite positive e4m3 byte (0x7F is NaN)
            codes = codes | (torch.randint(0, 2, shp, generator=g) << 7)
        return codes.to(torch.uint8).to(device).view(like.dtype).permute(1, 2, 0)

    return assemble(shape, fmt, a, b, scales(sfa), scales(sfb), p.c, device)


def check_exact_products(out: torch.Tensor, problem) -> tuple[bool, str]:
    """Pass when `out` matches the fp32 reference, or, where the sums are ill-conditioned (extreme scales make
    huge terms cancel, so the fp32 reference itself is off), when it lies within the fp32 accumulation bound
    of the float64 result: |out - ref64| <= K * 2^-23 * (|A| @ |B|^T) + the output dtype's rounding.
    That bound holds only if every product is exact, which is what the kernels claim."""
    res = check_output(out, reference_gemm(problem), problem.fmt.out_dtype)
    if res.passed:
        return True, res.summary()
    ref64 = reference_gemm(problem, torch.float64)
    absprod = torch.empty_like(ref64)
    for i in range(problem.shape.l):
        da, db = dequantize_operands(problem.data, problem.fmt, i)
        absprod[:, :, i] = da.double().abs() @ db.double().abs().T
    ulp = torch.finfo(problem.fmt.out_dtype).eps   # one unit in the last place, relative
    bound = problem.shape.k * 2.0 ** -23 * absprod + ulp * ref64.abs() + 1e-30
    got = out.double().to(ref64.device)
    # Overflow is judged on the result rounded to the output dtype, as the kernel's store rounds it.
    rounded = ref64.to(problem.fmt.out_dtype).double()
    nan_ok = torch.isnan(got) == torch.isnan(rounded)
    finite = torch.isfinite(got) & torch.isfinite(rounded)
    inf_ok = (torch.isinf(got) == torch.isinf(rounded)) & (~torch.isinf(got) | (torch.sign(got) == torch.sign(rounded)))
    within = ~finite | ((got - ref64).abs() <= bound)
    ok = bool((nan_ok & inf_ok & within).all())
    return ok, f"fp32 reference: {res.reason}; within the fp32 accumulation bound of float64: {ok}"
