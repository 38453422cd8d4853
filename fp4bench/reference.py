"""Exact reference: dequantize both operands and multiply.

Dequantized values are exact in float32 (e2m1/e4m3 times an e4m3 or power-of-two scale), so the only
rounding is the accumulation: float32 by default (the semantics of every FP4 tensor-core GEMM), float64
for tests. The result is [M, N, L] in the accumulation dtype; `reference_output` rounds it to the
problem's output dtype.

Two correct fp32 GEMMs that add the same exact products in different orders (split-K, other tiles) differ
by rounding that grows with sum_k |a_k b_k|, not with |c|: where large products cancel, that difference can
exceed any tolerance relative to |c|. `expected_output` therefore also returns a per-element allowance of
ACCUMULATION_SLACK * sqrt(K) * 2^-24 * sum_k |a_k b_k| (the random-walk size of fp32 rounding, with a
safety factor); on the competition's data it is far below the error of a single misplaced block. It applies
to every format alike: an MXFP8 product (e4m3 x e4m3 x two powers of two, 8 significant bits) is as exact in
fp32 as an FP4 one, so mxfp8 needs no allowance of its own. A kernel that approximates by design adds its own
declared bound (`Kernel.approximation_allowance`, fp4bench.pipeline.expected_for), never this one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .codecs import dequantize
from .formats import GemmFormat
from .problem import Problem


def dequantize_operands(data: tuple, fmt: GemmFormat, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 A[M, K] and B[N, K] of one batch of a GEMM input tuple."""
    a, b, sfa, sfb = data[:4]
    fa, fb = fmt.a, fmt.b
    da = dequantize(a[:, :, batch], None if sfa is None else sfa[:, :, batch], fa)
    db = dequantize(b[:, :, batch], None if sfb is None else sfb[:, :, batch], fb)
    return da, db


ACCUMULATION_SLACK = 4.0
FP32_UNIT_ROUNDOFF = 2.0 ** -24


@dataclass(frozen=True)
class Expected:
    """What a kernel's output is checked against: the fp32 reference and the per-element accumulation allowance."""

    values: torch.Tensor      # [M, N, L] float32
    allowance: torch.Tensor   # [M, N, L] float32, >= 0


def _batched_products(problem: Problem, accumulate: torch.dtype, magnitude: bool) -> tuple:
    """(A @ B^T, and with `magnitude` also |A| @ |B|^T) per batch, dequantizing each batch once."""
    s = problem.shape
    shape = (s.m, s.n, s.l)
    out = torch.empty(shape, dtype=accumulate, device=problem.a.device)
    mag = torch.empty(shape, dtype=accumulate, device=problem.a.device) if magnitude else None
    # TF32 would round the operands; the reference must not depend on the caller's global setting.
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        for i in range(s.l):
            da, db = (x.to(accumulate) for x in dequantize_operands(problem.data, problem.fmt, i))
            out[:, :, i] = da @ db.T
            if magnitude:
                mag[:, :, i] = da.abs() @ db.abs().T
    finally:
        torch.set_float32_matmul_precision(previous)
    return out, mag


def reference_gemm(problem: Problem, accumulate: torch.dtype = torch.float32, magnitude: bool = False) -> torch.Tensor:
    """C[M, N, L] = A @ B^T per batch, accumulated in `accumulate` (float32 or float64).

    With `magnitude`, sum_k |a_k| |b_k| instead (the scale of the accumulation's rounding).
    """
    values, mag = _batched_products(problem, accumulate, magnitude)
    return mag if magnitude else values


def reference_output(problem: Problem, accumulate: torch.dtype = torch.float32) -> torch.Tensor:
    return reference_gemm(problem, accumulate).to(problem.fmt.out_dtype)


def expected_output(problem: Problem) -> Expected:
    values, magnitude = _batched_products(problem, torch.float32, magnitude=True)
    slack = ACCUMULATION_SLACK * math.sqrt(problem.shape.k) * FP32_UNIT_ROUNDOFF
    return Expected(values, torch.nan_to_num(magnitude * slack, nan=0.0, posinf=float("inf")))
