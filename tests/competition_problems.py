"""Test helpers for the competition's GEMV, dual GEMM and grouped GEMM: references, poisoned outputs, planted bugs.

References dequantize with fp4bench.codecs (exact in fp32) and multiply in float64, then follow each problem's
reference: GEMV and grouped GEMM round the products to fp16; dual GEMM rounds both products to fp32, takes
silu(x) * y in fp32 and rounds that to fp16. Outputs are compared with the competition's tolerance
(|out - ref| <= 1e-3 + 1e-3 |ref|, fp4bench.checking), NaN where the reference is finite failing.
"""

from __future__ import annotations

import torch

from fp4bench.checking import CheckResult, check_output
from fp4bench.codecs import dequantize
from fp4bench.competition import generate_input
from fp4bench.formats import GEMM_FORMATS
from fp4bench.problem import DUAL_GEMM, GEMV, GROUP_GEMM, Problem, Shape

NVFP4 = GEMM_FORMATS["nvfp4"]
COMPETITION_NAMES = {GEMV: "nvfp4_gemv", DUAL_GEMM: "nvfp4_dual_gemm", GROUP_GEMM: "nvfp4_group_gemm"}


def _product(x, sx, y, sy, batch: int) -> torch.Tensor:
    """X_l · Y_lᵀ in float64 from packed operands and row-major scales (moved to the operands' device)."""
    dx = dequantize(x[:, :, batch], sx[:, :, batch].to(x.device), NVFP4.a).double()
    dy = dequantize(y[:, :, batch], sy[:, :, batch].to(y.device), NVFP4.b).double()
    return dx @ dy.T


def reference(kind: str, data: tuple):
    """The fp32 reference output of `data` (a list of tensors for the grouped GEMM)."""
    if kind == GEMV:
        a, b, sfa, sfb = data[:4]
        return torch.stack([_product(a, sfa, b[:1], sfb[:1], i) for i in range(a.shape[2])], dim=-1).float()
    if kind == DUAL_GEMM:
        a, b1, b2, sfa, sfb1, sfb2 = data[:6]
        out = []
        for i in range(a.shape[2]):
            gate = _product(a, sfa, b1, sfb1, i).float()
            up = _product(a, sfa, b2, sfb2, i).float()
            out.append(torch.nn.functional.silu(gate) * up)
        return torch.stack(out, dim=-1)
    return [_product(a, sfa, b, sfb, 0).float()[:, :, None] for (a, b, _), (sfa, sfb) in zip(data[0], data[1])]


def check(kind: str, out, data: tuple) -> CheckResult:
    """The competition's check of `out` against the reference of `data`; all groups together for grouped GEMM."""
    ref = reference(kind, data)
    if kind != GROUP_GEMM:
        return check_output(out, ref, torch.float16)
    if len(out) != len(ref):
        return CheckResult(False, f"{len(out)} outputs for {len(ref)} groups")
    for g, (o, r) in enumerate(zip(out, ref)):
        result = check_output(o, r, torch.float16)
        if not result.passed:
            return CheckResult(False, f"group {g}: {result.reason}")
    return CheckResult(True)


def _nan_like(c: torch.Tensor) -> torch.Tensor:
    return torch.full_like(c, float("nan"))


def poisoned(kind: str, data: tuple) -> tuple:
    """`data` with its output(s) filled with NaN, so that an element a kernel leaves unwritten fails."""
    if kind == GEMV:
        return data[:6] + (_nan_like(data[6]),)
    if kind == DUAL_GEMM:
        return data[:9] + (_nan_like(data[9]),)
    return ([(a, b, _nan_like(c)) for a, b, c in data[0]],) + tuple(data[1:])


def wrong_scales(kind: str, data: tuple, group: int = 0) -> tuple:
    """A planted bug: the kernel reads another operand's scales (same shape) in place of the right ones.

    GEMV (needs M = 128): A's and b's scales swapped; dual GEMM: B1's and B2's; grouped GEMM: group `group`'s
    A and B scales swapped (needs m == n there). The row-major scales the reference reads stay right."""
    if kind == GEMV:
        return data[:4] + (data[5], data[4], data[6])
    if kind == DUAL_GEMM:
        return data[:6] + (data[6], data[8], data[7], data[9])
    permuted = list(data[2])
    permuted[group] = permuted[group][::-1]
    return (data[0], data[1], permuted, data[3])


def competition_data(kind: str, device, seed: int, **sizes) -> tuple:
    return generate_input(COMPETITION_NAMES[kind], device=device, seed=seed, **sizes)


def full_range_gemv_data(device, seed: int, m: int, k: int, l: int) -> tuple:
    """GEMV inputs over every e2m1 value (signs, 6 x 6 products) and scales 0..3: the NVFP4 GEMM generator's bytes
    with N = 128, c cut to its first column. The competition's own GEMV data has only 0..1.5 and scales 0..2."""
    data = generate_input("nvfp4_gemm", device=device, m=m, n=128, k=k, l=l, seed=seed)
    return data[:6] + (data[6][:, :1, :],)


def as_problem(kind: str, data: tuple, device) -> Problem:
    """A Problem around competition data; its shape (only a key for tuned configurations here) from the sizes."""
    if kind == GEMV:
        a = data[0]
        shape = Shape(a.shape[0], 1, 2 * a.shape[1], a.shape[2])
    elif kind == DUAL_GEMM:
        a, b1 = data[:2]
        shape = Shape(a.shape[0], b1.shape[0], 2 * a.shape[1], a.shape[2])
    else:
        m, n, k, _ = data[3][0]
        shape = Shape(m, n, k)
    return Problem(shape, NVFP4, data, torch.device(device), kind)
