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
from ..codecs import dequantize
from ..formats import GEMM_FORMATS, GemmFormat
from ..layouts import competition_blocked_bytes
from ..problem import infer_format
from .base import Kernel, RunFn


def _dense_operands(data: tuple, fmt: GemmFormat, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A[M, K] and B[N, K] of one batch in the format's compute dtype."""
    a, b, sfa, sfb = data[:4]
    da = dequantize(a[:, :, batch], None if sfa is None else sfa[:, :, batch], fmt.a)
    db = dequantize(b[:, :, batch], None if sfb is None else sfb[:, :, batch], fmt.b)
    return da.to(fmt.compute_dtype), db.to(fmt.compute_dtype)


def _store(c: torch.Tensor, batch: int, product: torch.Tensor) -> None:
    c[:, :, batch].copy_(product)


class TorchDequantMM(Kernel):
    name = "torch-dequant-mm"
    formats = tuple(GEMM_FORMATS)
    role = "baseline"
    description = "dequantize with torch, then an fp16/bf16 matmul (both timed)"

    def run(self, data: tuple) -> torch.Tensor:
        fmt = infer_format(data)
        c = data[6]
        for i in range(c.shape[2]):
            da, db = _dense_operands(data, fmt, i)
            _store(c, i, da @ db.T)
        return c


class CublasDense(Kernel):
    """Dense operands are made once per input (keyed by A's storage, which the cache keeps alive)."""

    name = "cublas-dense"
    formats = tuple(GEMM_FORMATS)
    role = "baseline"
    description = "fp16/bf16 matmul on operands dequantized outside the timed region"

    def prepare(self, problem) -> RunFn:
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
                _store(c, i, da @ db.T)
            return c

        return run

    def run(self, data: tuple) -> torch.Tensor:
        return self.prepare(_ProblemView(infer_format(data)))(data)


class _ProblemView:
    """The one attribute of a Problem that `CublasDense.prepare` reads."""

    def __init__(self, fmt: GemmFormat):
        self.fmt = fmt


class TorchScaledMM(Kernel):
    name = "torch-scaled-mm"
    formats = ("nvfp4", "mxfp4")
    archs = tuple(sorted(FP4_TENSOR_CORE_ARCHS))
    devices = ("cuda",)
    role = "baseline"
    math_path = "fp4"
    description = "torch._scaled_mm on FP4 operands (cuBLAS block-scaled GEMM)"

    def run(self, data: tuple) -> torch.Tensor:
        fmt = infer_format(data)
        a, b, sfa_perm, sfb_perm, c = data[0], data[1], data[4], data[5], data[6]
        scale_dtype = fmt.a.scale.dtype
        sfa = competition_blocked_bytes(sfa_perm)
        sfb = competition_blocked_bytes(sfb_perm)
        for i in range(c.shape[2]):
            # _scaled_mm wants A row-major and B column-major: b[:, :, i] is [N, K/2] K-major, so .T is.
            out = torch._scaled_mm(a[:, :, i], b[:, :, i].T, sfa[i].view(scale_dtype), sfb[i].view(scale_dtype),
                                   out_dtype=fmt.out_dtype)
            _store(c, i, out)
        return c


KERNELS = (TorchScaledMM(), TorchDequantMM(), CublasDense())
