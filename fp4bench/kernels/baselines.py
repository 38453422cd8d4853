"""Baselines a kernel is compared against, registered like any kernel (role "baseline").

- `torch-scaled-mm`: `torch._scaled_mm` on FP4 operands (cuBLAS block-scaled GEMM) with the blocked scales
  the competition hands over (`sf*_permuted`). Only on GPUs with FP4 tensor cores (sm_100/103/120/121);
  elsewhere skipped with the reason. NVFP4 and MXFP4.
- `torch-dequant-mm`: dequantize both operands with torch (fp4bench.codecs) into the format's exact dense
  dtype, then one matmul per batch; dequantization and matmul are timed together.
- `cublas-dense`: the same matmul with the operands dequantized outside the timed region (at the first
  call on an input, which warm-up absorbs): the dense-GEMM speed a user compares against.
Dense dtype = `GemmFormat.compute_dtype` (fp16 for NVFP4, bf16 otherwise): exact for the operands, and the
matmul accumulates in fp32 as every FP4 tensor-core GEMM does.
"""

from __future__ import annotations

import torch

from ..arch import FP4_TENSOR_CORE_ARCHS
from ..formats import GEMM_FORMATS, GemmFormat
from ..layouts import competition_blocked_bytes
from ..problem import Problem
from ..reference import dequantize_operands
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


class CublasDense(Kernel):
    """Dense operands are made once per input (keyed by A's storage, which the cache keeps alive).

    The product is written straight into C (`out=` on C's [M, N] slice of each batch) where the dtypes
    allow: no temporary and no copy, the strongest plain cuBLAS call for the dense operands."""

    name = "cublas-dense"
    formats = tuple(GEMM_FORMATS)
    role = "baseline"
    description = "fp16/bf16 matmul on operands dequantized outside the timed region"

    def prepare(self, problem: Problem) -> RunFn:
        fmt = problem.fmt
        dense: dict[tuple, tuple] = {}

        def run(data: tuple) -> torch.Tensor:
            a = data[0]
            key = (a.data_ptr(), data[1].data_ptr())
            entry = dense.get(key)
            if entry is None or entry[0] is not a:
                # Holding `a` pins its storage, so the pointer key cannot be reused by another tensor.
                entry = (a, [_dense_operands(data, fmt, i) for i in range(a.shape[2])])
                dense[key] = entry
            c = data[6]
            for i, (da, db) in enumerate(entry[1]):
                _matmul_into(c, i, da, db)
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


KERNELS = (TorchScaledMM(), TorchDequantMM(), CublasDense())
