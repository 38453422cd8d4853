"""Baselines a kernel is compared against, registered like any kernel (role "baseline").

- `torch-scaled-mm`: `torch._scaled_mm` on FP4 operands (cuBLAS block-scaled GEMM) with the blocked scales
  the competition hands over (`sf*_permuted`). Only on GPUs with FP4 tensor cores (sm_100/103/120/121);
  elsewhere skipped with the reason. NVFP4 and MXFP4.
- `torch-dequant-mm`: dequantize the operands with torch (fp4bench.codecs) into the format's exact dense
  dtype, then one matmul per batch (and per GEMM of the problem kind); dequantization and matmul are timed
  together.
- `cublas-dense`: the same matmuls with the operands dequantized outside the timed region (at the first
  call on an input, which warm-up absorbs): the dense-GEMM speed a user compares against.
Dense dtype = `GemmFormat.compute_dtype` (fp16 for NVFP4, bf16 otherwise): exact for the operands, and the
matmul accumulates in fp32 as every FP4 tensor-core GEMM does.
Both compute every problem kind: GEMV as a matmul with the one-row B (cuBLAS's GEMV path), a grouped problem
one matmul per group, the dual GEMM two matmuls with fp32 outputs (`torch.mm(..., out_dtype=float32)` on
CUDA, fp32 operands where torch has no such overload, the CPU) and silu(r1)·r2 in fp32, as the competition.
torch's public grouped matmul (`torch.nn.functional.grouped_mm`, torch 2.11 and 2.13) is no baseline here:
it writes bf16 only (8 significant bits, 2^-9 relative rounding), which cannot meet the fp16 output's 1e-3
tolerance, so the grouped baseline is one matmul per group.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from ..arch import FP4_TENSOR_CORE_ARCHS, FP8_TENSOR_CORE_ARCHS
from ..formats import E4M3_MAX, GEMM_FORMATS, GemmFormat
from ..layouts import competition_blocked_bytes
from ..problem import DUAL_GEMM, PROBLEM_KINDS, Problem
from ..reference import dequantize_operands, fp8_mma_allowance, gemm_operands, silu_product
from .base import Kernel, RunFn


def _dense_problem(data, kind: str, fmt: GemmFormat, batches: int) -> list[list[tuple]]:
    """Per GEMM of the problem, per batch: its dense (A, B). A dual GEMM's shared A is dequantized once."""
    done: dict[tuple, torch.Tensor] = {}

    def dense(t, scales, op_fmt, batch):
        key = (id(t), batch)
        if key not in done:
            from ..codecs import dequantize

            s = None if scales is None else scales[:, :, batch].to(t.device)
            done[key] = dequantize(t[:, :, batch], s, op_fmt).to(fmt.compute_dtype)
        return done[key]

    return [[(dense(a, sfa, fmt.a, i), dense(b, sfb, fmt.b, i)) for i in range(batches)]
            for a, b, sfa, sfb in gemm_operands(data, kind)]


def _matmul_into(c: torch.Tensor, batch: int, da: torch.Tensor, db: torch.Tensor) -> None:
    """C[:, :, batch] = A @ B^T, written in place when the output dtype is the compute dtype."""
    out = c[:, :, batch]
    if out.dtype == da.dtype:
        torch.matmul(da, db.T, out=out)
    else:   # nvfp4-bf16: exact fp16 operands, bf16 output
        out.copy_(da @ db.T)


@lru_cache(maxsize=None)
def _fp32_output_matmul(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch.mm takes 16-bit operands to an fp32 result on this device (asked once, on a tiny product)."""
    if device.type != "cuda" or "dtype" not in torch.ops.aten.mm.overloads():
        return False
    try:
        x = torch.ones(16, 16, dtype=dtype, device=device)
        return torch.mm(x, x, out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def _fp32_product(da: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    """A @ B^T with an fp32 result: the 16-bit matmul with fp32 output where torch has it (CUDA), else fp32
    operands (exact too: the dequantized values are)."""
    if _fp32_output_matmul(da.device, da.dtype):
        return torch.mm(da, db.T, out_dtype=torch.float32)
    return da.float() @ db.float().T


def _combine(dense: list[list[tuple]], outputs: list[torch.Tensor], kind: str) -> None:
    """Each GEMM's product into its output; the dual GEMM's two through silu(r1)·r2."""
    if kind == DUAL_GEMM:
        (c,), (first, second) = outputs, dense
        for i, ((da, db1), (_, db2)) in enumerate(zip(first, second)):
            c[:, :, i].copy_(silu_product(_fp32_product(da, db1), _fp32_product(da, db2)))
        return
    for c, batches in zip(outputs, dense):
        for i, (da, db) in enumerate(batches):
            _matmul_into(c, i, da, db)


class TorchDequantMM(Kernel):
    name = "torch-dequant-mm"
    formats = tuple(GEMM_FORMATS)
    problems = PROBLEM_KINDS
    role = "baseline"
    description = "dequantize with torch, then an fp16/bf16 matmul (both timed)"

    def prepare(self, problem: Problem) -> RunFn:
        fmt, kind, spec, batches = problem.fmt, problem.kind, problem.spec, problem.shape.l

        def run(data):
            outputs = spec.outputs(data)
            _combine(_dense_problem(data, kind, fmt, batches), outputs, kind)
            return spec.result(outputs)

        return run


class PerInput:
    """Operands converted once per input set, outside the timed region (the first call on an input, which
    warm-up absorbs), keyed by the storage of the problem's first A and B; holding that A pins its storage,
    so a pointer key cannot be reused by another tensor."""

    def __init__(self, convert):
        self.convert = convert   # data -> the converted operands
        self.entries: dict[tuple, tuple] = {}

    def __call__(self, data, first_a: torch.Tensor, first_b: torch.Tensor):
        key = (first_a.data_ptr(), first_b.data_ptr())
        entry = self.entries.get(key)
        if entry is None or entry[0] is not first_a:
            entry = (first_a, self.convert(data))
            self.entries[key] = entry
        return entry[1]


class CublasDense(Kernel):
    """The product is written straight into C (`out=` on C's [M, N] slice of each batch) where the dtypes
    allow: no temporary and no copy, the strongest plain cuBLAS call for the dense operands."""

    name = "cublas-dense"
    formats = tuple(GEMM_FORMATS)
    problems = PROBLEM_KINDS
    role = "baseline"
    description = "fp16/bf16 matmul on operands dequantized outside the timed region"

    def prepare(self, problem: Problem) -> RunFn:
        fmt, kind, spec, batches = problem.fmt, problem.kind, problem.spec, problem.shape.l
        dense = PerInput(lambda data: _dense_problem(data, kind, fmt, batches))

        def run(data):
            (a, b, _, _), *_ = gemm_operands(data, kind)
            outputs = spec.outputs(data)
            _combine(dense(data, a, b), outputs, kind)
            return spec.result(outputs)

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
        return bound.float() + fp8_mma_allowance(problem)

    def prepare(self, problem: Problem) -> RunFn:
        fmt = problem.fmt
        operands = PerInput(lambda data: [_tensorwise_operands(data, fmt, i) for i in range(data[0].shape[2])])

        def run(data: tuple) -> torch.Tensor:
            c = data[6]
            for i, (qa, qb, sa, sb) in enumerate(operands(data, data[0], data[1])):
                # A row-major, B column-major ([N, K] K-major, transposed); C's batch slice is row-major.
                torch._scaled_mm(qa, qb.T, sa, sb, out_dtype=fmt.out_dtype, use_fast_accum=False, out=c[:, :, i])
            return c

        return run


KERNELS = (TorchScaledMM(), TorchScaledMMFp8(), TorchDequantMM(), CublasDense())
