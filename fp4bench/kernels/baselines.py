"""Baselines a kernel is compared against, registered like any kernel (role "baseline").

- `torch-scaled-mm`: `torch._scaled_mm` on FP4 operands (cuBLAS block-scaled GEMM) with the blocked scales
  the competition hands over (`sf*_permuted`). Only on GPUs with FP4 tensor cores (sm_100/103/120/121);
  elsewhere skipped with the reason. NVFP4 and MXFP4.
- `torch-dequant-mm`: dequantize both operands with torch (fp4bench.codecs) into the format's exact dense
  dtype, then one matmul per batch; dequantization and matmul are timed together.
- `cublas-dense`: the same matmul with the operands dequantized outside the timed region (at the first
  call on an input, which warm-up absorbs): the dense-GEMM speed a user compares against.
- `torch-scaled-fp8`: MXFP8 only, the vendor's nearest fp8 path on GPUs without block-scaled MMA:
  `torch._scaled_mm` on e4m3 operands with one scale per tensor (cuBLAS fp8 GEMM, fp32 accumulation with
  the default periodic promotion). The operands are dequantized and requantized outside the timed region, with
  a power-of-two tensor scale 2^ceil(log2(amax / 448)): elements that stay in e4m3's normal range are exact,
  smaller ones round to its subnormal grid or to zero. So it is NOT exact, and says so: its check adds the
  bound of that requantization (computed from the actual rounding errors, |dA| |B|^T + |A'| |dB|^T) and an
  allowance for fp8 tensor-core accumulation (`FP8_MMA_ALLOWANCE` x sum |a b|). A timing baseline; its PASS
  means "within that bound". N and K multiples of 16 (cuBLAS fp8).
Dense dtype = `GemmFormat.compute_dtype` (fp16 for NVFP4, bf16 otherwise): exact for the operands, and the
matmul accumulates in fp32 as every FP4 tensor-core GEMM does.
"""

from __future__ import annotations

import math

import torch

from ..arch import FP4_TENSOR_CORE_ARCHS, FP8_TENSOR_CORE_ARCHS
from ..formats import E4M3_MAX, GEMM_FORMATS, GemmFormat
from ..layouts import competition_blocked_bytes
from ..problem import Problem
from ..reference import dequantize_operands, reference_gemm
from .base import Kernel, RunFn


def _dense_operands(data: tuple, fmt: GemmFormat, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A[M, K] and B[N, K] of one batch in the format's compute dtype."""
    da, db = dequantize_operands(data, fmt, batch)
    return da.to(fmt.compute_dtype), db.to(fmt.compute_dtype)


def _matmul_into(c: torch.Tensor, batch: int, da: torch.Tensor, db: torch.Tensor) -> None:
    """C[:, :, batch] = A @ B^T, written in place when the output dtype is the compute dtype."""
    out = c[:, :, batch]
    if out.dtype == da.dtype:
        torch.matmul(da, db.T, out=out)
    else:   # nvfp4-bf16: exact fp16 operands, bf16 output
        out.copy_(da @ db.T)


class TorchDequantMM(Kernel):
    name = "torch-dequant-mm"
    formats = tuple(GEMM_FORMATS)
    role = "baseline"
    description = "dequantize with torch, then an fp16/bf16 matmul (both timed)"

    def prepare(self, problem: Problem) -> RunFn:
        fmt = problem.fmt

        def run(data: tuple) -> torch.Tensor:
            c = data[6]
            for i in range(c.shape[2]):
                _matmul_into(c, i, *_dense_operands(data, fmt, i))
            return c

        return run


class PerInput:
    """Operands converted once per input set, outside the timed region (the first call on an input, which
    warm-up absorbs), keyed by A's and B's storage; holding `a` pins its storage, so a pointer key cannot be
    reused by another tensor."""

    def __init__(self, convert):
        self.convert = convert   # data -> one converted entry per batch
        self.entries: dict[tuple, tuple] = {}

    def __call__(self, data: tuple) -> list:
        a = data[0]
        key = (a.data_ptr(), data[1].data_ptr())
        entry = self.entries.get(key)
        if entry is None or entry[0] is not a:
            entry = (a, self.convert(data))
            self.entries[key] = entry
        return entry[1]


class CublasDense(Kernel):
    """The product is written straight into C (`out=` on C's [M, N] slice of each batch) where the dtypes
    allow: no temporary and no copy, the strongest plain cuBLAS call for the dense operands."""

    name = "cublas-dense"
    formats = tuple(GEMM_FORMATS)
    role = "baseline"
    description = "fp16/bf16 matmul on operands dequantized outside the timed region"

    def prepare(self, problem: Problem) -> RunFn:
        fmt = problem.fmt
        dense = PerInput(lambda data: [_dense_operands(data, fmt, i) for i in range(data[0].shape[2])])

        def run(data: tuple) -> torch.Tensor:
            c = data[6]
            for i, (da, db) in enumerate(dense(data)):
                _matmul_into(c, i, da, db)
            return c

        return run


# fp8 tensor-core accumulation, as public measurements of Hopper describe it: one MMA instruction adds its 32
# products and the running partial sum aligned to the largest, keeping 13 bits below it (truncated). 33 terms
# each off by at most 2^-13 of the largest give 33 x 2^-13 ~ 2^-8 of sum |a b|. A model, not a proof: used
# only for the allowance of the tensorwise fp8 baseline (its GPU check is the test of it).
FP8_MMA_ALLOWANCE = 33 * 2.0 ** -13


def requantize_tensorwise(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """float32 [rows, K] -> (e4m3 values, power-of-two scale): x ~= values * scale, exact in e4m3's normal range."""
    amax = float(x.abs().max()) if x.numel() else 0.0
    scale = 2.0 ** math.ceil(math.log2(amax / E4M3_MAX)) if amax > 0 else 1.0
    return (x / scale).to(torch.float8_e4m3fn), scale


def _tensorwise_operands(data: tuple, fmt: GemmFormat, batch: int) -> tuple:
    da, db = dequantize_operands(data, fmt, batch)
    (qa, sa), (qb, sb) = requantize_tensorwise(da), requantize_tensorwise(db)
    return qa, qb, torch.tensor(sa, device=qa.device), torch.tensor(sb, device=qb.device)


class TorchScaledMMFp8(Kernel):
    name = "torch-scaled-fp8"
    formats = ("mxfp8",)
    archs = tuple(sorted(FP8_TENSOR_CORE_ARCHS, key=lambda arch: int(arch[3:].rstrip("a"))))
    devices = ("cuda",)
    role = "baseline"
    math_path = "fp8"
    description = "torch._scaled_mm fp8, one scale per tensor (requantized: not exact, bounded)"

    def can_implement(self, problem: Problem) -> str | None:
        s = problem.shape
        odd = [f"{name}={v}" for name, v in (("N", s.n), ("K", s.k)) if v % 16]
        return f"{' and '.join(odd)} not a multiple of 16 (cuBLAS fp8 GEMM)" if odd else None

    def approximation_allowance(self, problem: Problem) -> torch.Tensor:
        s, fmt = problem.shape, problem.fmt
        bound = torch.empty((s.m, s.n, s.l), dtype=torch.float64, device=problem.a.device)
        for i in range(s.l):
            da, db = (x.double() for x in dequantize_operands(problem.data, fmt, i))
            qa, qb, sa, sb = _tensorwise_operands(problem.data, fmt, i)
            ra, rb = qa.double() * float(sa), qb.double() * float(sb)
            bound[:, :, i] = (da - ra).abs() @ db.abs().T + ra.abs() @ (db - rb).abs().T
        return (bound + FP8_MMA_ALLOWANCE * reference_gemm(problem, torch.float64, magnitude=True)).float()

    def prepare(self, problem: Problem) -> RunFn:
        fmt = problem.fmt
        operands = PerInput(lambda data: [_tensorwise_operands(data, fmt, i) for i in range(data[0].shape[2])])

        def run(data: tuple) -> torch.Tensor:
            c = data[6]
            for i, (qa, qb, sa, sb) in enumerate(operands(data)):
                # A row-major, B column-major ([N, K] K-major, transposed); C's batch slice is row-major.
                torch._scaled_mm(qa, qb.T, sa, sb, out_dtype=fmt.out_dtype, use_fast_accum=False, out=c[:, :, i])
            return c

        return run


class TorchScaledMM(Kernel):
    name = "torch-scaled-mm"
    formats = ("nvfp4", "mxfp4")
    archs = tuple(sorted(FP4_TENSOR_CORE_ARCHS))
    devices = ("cuda",)
    role = "baseline"
    math_path = "fp4"
    description = "torch._scaled_mm on FP4 operands (cuBLAS block-scaled GEMM)"

    def prepare(self, problem: Problem) -> RunFn:
        fmt = problem.fmt
        scale_dtype = fmt.a.scale.dtype

        def run(data: tuple) -> torch.Tensor:
            a, b, sfa_perm, sfb_perm, c = data[0], data[1], data[4], data[5], data[6]
            sfa = competition_blocked_bytes(sfa_perm)
            sfb = competition_blocked_bytes(sfb_perm)
            for i in range(c.shape[2]):
                # _scaled_mm wants A row-major and B column-major: b[:, :, i] is [N, K/2] K-major, so .T is.
                out = torch._scaled_mm(a[:, :, i], b[:, :, i].T, sfa[i].view(scale_dtype),
                                       sfb[i].view(scale_dtype), out_dtype=fmt.out_dtype)
                c[:, :, i].copy_(out)
            return c

        return run


KERNELS = (TorchScaledMM(), TorchScaledMMFp8(), TorchDequantMM(), CublasDense())
