"""Exact reference of every problem kind: dequantize the operands and multiply.

Dequantized values are exact in float32 (e2m1/e4m3 times an e4m3 or power-of-two scale), so the only
rounding is the accumulation: float32 by default (the semantics of every FP4 tensor-core GEMM), float64
for tests. Per kind (fp4bench.problem): gemm C = A·Bᵀ per batch; gemv the same with B = row 0 of b (the
competition pads the vector to 128 rows), c [M, 1, L]; dual_gemm silu(A·B1ᵀ)·(A·B2ᵀ) on the two fp32
products, as the competition computes it; group_gemm one GEMM per group, a list of outputs. `reference`
returns the values in the accumulation dtype, `reference_output` rounds them to the output dtype.

Accumulation allowance (`expected_output`). Two correct fp32 GEMMs that add the same exact products in
different orders (split-K, other tiles) differ by rounding that grows with sum_k |a_k b_k|, not with |c|:
where large products cancel, that difference can exceed any tolerance relative to |c|. So each element
gets an allowance of ACCUMULATION_SLACK * sqrt(K) * 2^-24 * sum_k |a_k b_k| (the random-walk size of fp32
rounding, with a safety factor) -- except where exact fp32 accumulation is guaranteed, where it is zero:
every product a_k b_k of row i and column j is a multiple of q_ij (the lowest set bit of A's row i times
that of B's row j), so every partial sum, in any order, is a multiple of q_ij no larger than
sum_k |a_k b_k|; when that sum is below 2^23 q_ij (a bit of margin under fp32's 24-bit significand) every
partial sum is exact in fp32 and so is any correct kernel's result. That holds for the competition's
GEMM, GEMV and grouped GEMM data (integer scales, K <= 16384), whose check is then exactly the
competition's; the dual GEMM's fractional e4m3 scales and the MX, W4A8 and W4A16 formats get the allowance,
and so does every element for a kernel that does not add in full fp32 (Hopper's fp8 tensor cores keep about
14 bits of their accumulator: fp4bench.pipeline.fp32_accumulation).
Through the dual GEMM's silu(r1)·r2 the two products' allowances e1, e2 propagate as
SILU_SLOPE_MAX · e1 · (|r2| + e2) + |silu(r1)| · e2 (silu's slope is below 1.1 everywhere). On the
competition's dual GEMM data that is a few tenths of a percent of the large outputs, and more where A·B1ᵀ
nearly cancels: there the competition's own verdict depends on the accumulation order of its cuBLAS
reference, which no other fp32 kernel shares.
An MXFP8 product (e4m3 x e4m3 x two powers of two, 8 significant bits) is as exact in fp32 as an FP4
one, so mxfp8 needs no allowance of its own. A kernel that approximates by design adds its own declared
bound (`Kernel.approximation_allowance`, fp4bench.pipeline.expected_for), never this one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .codecs import dequantize
from .formats import GemmFormat
from .problem import DUAL_GEMM, GEMV, GROUP_GEMM, Problem

ACCUMULATION_SLACK = 4.0
FP32_UNIT_ROUNDOFF = 2.0 ** -24
# Below this many quanta every partial sum is an exact fp32 value (2^24, halved as a margin).
EXACT_SUM_QUANTA = 2.0 ** 23
# max over x of |d silu(x) / dx| is 1.0998.
SILU_SLOPE_MAX = 1.1


def dequantize_operands(data: tuple, fmt: GemmFormat, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 A[M, K] and B[N, K] of one batch of a GEMM input tuple (a, b, sfa, sfb, ...).

    Scales on another device than their elements (the grouped problem's, which the competition hands over on
    the CPU) are moved to the elements' device."""
    a, b, sfa, sfb = data[:4]
    da = dequantize(a[:, :, batch], None if sfa is None else sfa[:, :, batch].to(a.device), fmt.a)
    db = dequantize(b[:, :, batch], None if sfb is None else sfb[:, :, batch].to(b.device), fmt.b)
    return da, db


@dataclass(frozen=True)
class Expected:
    """What a kernel's output is checked against, in the kind's output structure (a tensor, or a list of
    tensors for group_gemm): the fp32 reference and the per-element accumulation allowance."""

    values: torch.Tensor | list[torch.Tensor]      # [M, N, L] float32 (each)
    allowance: torch.Tensor | list[torch.Tensor]   # the same shapes, >= 0


@dataclass
class _Products:
    """A·Bᵀ of one GEMM per batch, [M, N, L], with sum_k |a_k b_k| and the quantum q_ij when asked for."""

    values: torch.Tensor
    magnitude: torch.Tensor | None = None
    quantum: torch.Tensor | None = None

    def allowance(self, k: int, fp32_adds: bool = True) -> torch.Tensor:
        """The accumulation allowance: zero where exact fp32 accumulation is guaranteed (module docstring), which
        needs a kernel that adds in full fp32 (`fp32_adds`)."""
        slack = self.magnitude * (ACCUMULATION_SLACK * math.sqrt(k) * FP32_UNIT_ROUNDOFF)
        if not fp32_adds:
            return torch.nan_to_num(slack, nan=0.0, posinf=float("inf"))
        exact = self.magnitude <= EXACT_SUM_QUANTA * self.quantum
        return torch.nan_to_num(torch.where(exact, torch.zeros_like(slack), slack), nan=0.0, posinf=float("inf"))


def row_quanta(x: torch.Tensor) -> torch.Tensor:
    """Per row of a float32 matrix, the smallest lowest-set-bit value among its nonzero elements (inf if none):
    every element of the row is an integer multiple of it."""
    bits = x.contiguous().view(torch.int32) & 0x7FFFFFFF
    exponent = bits >> 23
    mantissa = torch.where(exponent > 0, (bits & 0x7FFFFF) | 0x800000, bits & 0x7FFFFF)
    lowest = mantissa & -mantissa
    # value = mantissa * 2^(max(exponent, 1) - 150) for normal and subnormal floats alike.
    low = lowest.double() * torch.exp2((torch.clamp(exponent, min=1) - 150).double())
    low = torch.where((bits == 0) | (exponent == 0xFF), torch.full_like(low, math.inf), low)
    return low.amin(dim=1)


def _gemm_products(operands: tuple, fmt: GemmFormat, l: int, accumulate: torch.dtype,
                   magnitude: bool) -> _Products:
    """A·Bᵀ per batch of the GEMM (a, b, sfa, sfb), dequantizing each batch once."""
    a, b = operands[0], operands[1]
    shape = (a.shape[0], b.shape[0], l)
    out = _Products(torch.empty(shape, dtype=accumulate, device=a.device))
    if magnitude:
        out.magnitude = torch.empty(shape, dtype=accumulate, device=a.device)
        out.quantum = torch.empty(shape, dtype=torch.float64, device=a.device)
    # TF32 would round the operands; the reference must not depend on the caller's global setting.
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        for i in range(l):
            da, db = dequantize_operands(operands, fmt, i)
            if magnitude:
                out.quantum[:, :, i] = row_quanta(da)[:, None] * row_quanta(db)[None, :]
            da, db = da.to(accumulate), db.to(accumulate)
            out.values[:, :, i] = da @ db.T
            if magnitude:
                out.magnitude[:, :, i] = da.abs() @ db.abs().T
    finally:
        torch.set_float32_matmul_precision(previous)
    return out


def gemm_operands(d, kind: str) -> list[tuple]:
    """The (a, b, sfa, sfb) of each GEMM an input structure of `kind` is made of: GEMV's B is row 0 of b, a
    dual GEMM is A with B1 and A with B2, a grouped problem one GEMM per group."""
    if kind == GEMV:
        return [(d[0], d[1][:1], d[2], d[3][:1])]
    if kind == DUAL_GEMM:
        return [(d[0], d[1], d[3], d[4]), (d[0], d[2], d[3], d[5])]
    if kind == GROUP_GEMM:
        return [(a, b, sfa, sfb) for (a, b, _), (sfa, sfb) in zip(d[0], d[1])]
    return [d[:4]]


def _products(problem: Problem, accumulate: torch.dtype, magnitude: bool) -> list[_Products]:
    return [_gemm_products(ops, problem.fmt, problem.shape.l, accumulate, magnitude)
            for ops in gemm_operands(problem.data, problem.kind)]


def silu_product(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """The dual GEMM's epilogue on its two fp32 products: silu(r1) * r2."""
    return torch.nn.functional.silu(r1) * r2


def reference_gemm(problem: Problem, accumulate: torch.dtype = torch.float32, magnitude: bool = False) -> torch.Tensor:
    """C[M, N, L] = A @ B^T per batch of a GEMM (or GEMV) problem, accumulated in `accumulate`.

    With `magnitude`, sum_k |a_k| |b_k| instead (the scale of the accumulation's rounding)."""
    (p,) = _products(problem, accumulate, magnitude)
    return p.magnitude if magnitude else p.values


def reference(problem: Problem, accumulate: torch.dtype = torch.float32):
    """The exact result of any kind in `accumulate`: a tensor, or the list of the groups' for group_gemm."""
    products = _products(problem, accumulate, magnitude=False)
    if problem.kind == DUAL_GEMM:
        return silu_product(products[0].values, products[1].values)
    values = [p.values for p in products]
    return problem.spec.result(values)


def reference_output(problem: Problem, accumulate: torch.dtype = torch.float32):
    """`reference` rounded to the problem's output dtype (each group's, for group_gemm)."""
    values = reference(problem, accumulate)
    if isinstance(values, list):
        return [v.to(problem.fmt.out_dtype) for v in values]
    return values.to(problem.fmt.out_dtype)


def expected_output(problem: Problem, fp32_adds: bool = True) -> Expected:
    """The fp32 reference of any kind with its accumulation allowance (see the module docstring); `fp32_adds`
    False (a kernel whose tensor cores keep fewer accumulator bits) keeps the allowance everywhere."""
    products = _products(problem, torch.float32, magnitude=True)
    ks = [k for _, _, k in problem.shape.groups]
    allowances = [p.allowance(ks[i] if problem.kind == GROUP_GEMM else ks[0], fp32_adds)
                  for i, p in enumerate(products)]
    if problem.kind == DUAL_GEMM:
        (r1, r2), (e1, e2) = (p.values for p in products), allowances
        values = silu_product(r1, r2)
        allowance = SILU_SLOPE_MAX * e1 * (r2.abs() + e2) + torch.nn.functional.silu(r1).abs() * e2
        return Expected(values, torch.nan_to_num(allowance, nan=0.0, posinf=float("inf")))
    values = [p.values for p in products]
    return Expected(problem.spec.result(values), problem.spec.result(allowances))


# fp8 tensor-core accumulation, as public measurements of Hopper describe it: one MMA instruction adds its 32
# products and the running partial sum aligned to the largest, keeping 13 bits below it (truncated). 33 terms
# each off by at most 2^-13 of the largest give 33 x 2^-13 ~ 2^-8 of sum |a b|. A model, not a proof: used
# only for the declared bound of kernels that add on fp8 tensor cores (torch-scaled-fp8, sm90-mxfp8-fp8).
FP8_MMA_ALLOWANCE = 33 * 2.0 ** -13


def fp8_mma_allowance(problem: Problem) -> torch.Tensor:
    """[M, N, L] float32 bound on what fp8 tensor-core accumulation may add to a GEMM's error: FP8_MMA_ALLOWANCE
    times sum_k |a_k b_k| (a model of Hopper's fp8 adder, see above)."""
    return (FP8_MMA_ALLOWANCE * reference_gemm(problem, torch.float64, magnitude=True)).float()
