"""Exact reference: dequantize both operands and multiply.

Dequantized values are exact in float32 (e2m1/e4m3 times an e4m3 or power-of-two scale), so the only
rounding is the accumulation: float32 by default (the semantics of every FP4 tensor-core GEMM), float64
for tests. The result is [M, N, L] in the accumulation dtype; `reference_output` rounds it to the
problem's output dtype.
"""

from __future__ import annotations

import torch

from .codecs import dequantize
from .problem import Problem


def dequantize_operands(problem: Problem, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 A[M, K] and B[N, K] of one batch."""
    a, b, sfa, sfb = problem.data[:4]
    fa, fb = problem.fmt.a, problem.fmt.b
    da = dequantize(a[:, :, batch], None if sfa is None else sfa[:, :, batch], fa)
    db = dequantize(b[:, :, batch], None if sfb is None else sfb[:, :, batch], fb)
    return da, db


def reference_gemm(problem: Problem, accumulate: torch.dtype = torch.float32) -> torch.Tensor:
    """C[M, N, L] = A @ B^T per batch, accumulated in `accumulate` (float32 or float64)."""
    s = problem.shape
    out = torch.empty((s.m, s.n, s.l), dtype=accumulate, device=problem.a.device)
    # TF32 would round the operands; the reference must not depend on the caller's global setting.
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        for i in range(s.l):
            da, db = dequantize_operands(problem, i)
            out[:, :, i] = da.to(accumulate) @ db.to(accumulate).T
    finally:
        torch.set_float32_matmul_precision(previous)
    return out


def reference_output(problem: Problem, accumulate: torch.dtype = torch.float32) -> torch.Tensor:
    return reference_gemm(problem, accumulate).to(problem.fmt.out_dtype)
