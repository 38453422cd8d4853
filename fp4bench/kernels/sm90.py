"""The Hopper (sm_90a) FP4 GEMMs in Triton (fp4bench.kernels.fp4_triton): exact dequantize-in-registers + wgmma.

The CUDA kernels of kernels/sm90/ (fp4bench.kernels.sm90_wgmma) take the plain names sm90-nvfp4, sm90-mxfp4 and
sm90-w4a16; the Triton kernels here are their `-triton` twins (one tile kernel per program, decode and wgmma in
the same warps), kept as the CPU-checkable design and for comparison.

Hopper has no FP4 tensor cores. Every dequantized operand value is exact in the dtype it is multiplied in
(NVFP4: e2m1 x e4m3 in fp16; MXFP4: e2m1 x 2^k in bf16), so the only rounding is the fp32 accumulation, as
in the reference. Constraints: K a multiple of the format's block size; any M, N and L >= 1.
sm90-gemv, sm90-dual-gemm and sm90-group-gemm compute the competition's other NVFP4 problems (their
constraints: the modules fp4_triton/gemv.py, dual_gemm.py, group_gemm.py).

MXFP8 (sm90-mxfp8) needs no decoding: e4m3 is exact in bf16, so it goes to bf16 wgmma as it is, and each
32-deep block's partial product is scaled into the fp32 accumulator (fp4_triton/mxfp8.py). sm90-mxfp8-fp8
runs the same algorithm on fp8 wgmma, whose adder rounds: approximate, checked against a declared bound.
"""

from __future__ import annotations

import triton.language as tl

from ..problem import DUAL_GEMM, GEMV, GROUP_GEMM
from ..reference import fp8_mma_allowance
from .fp4_triton import dual_gemm, gemv, group_gemm
from .fp4_triton.kernel import Mxfp8Kernel, TritonFp4Kernel, TritonProblemKernel, W4a16Kernel


class HopperKernel(TritonFp4Kernel):
    """The sm_90a variants: PTX decode (cvt from e4m3) and wgmma, so Hopper only."""

    archs = ("sm_90a",)
    devices = ("cuda",)
    use_asm = True


class Sm90Nvfp4(HopperKernel):
    name = "sm90-nvfp4-triton"
    formats = ("nvfp4",)
    math_path = "fp16"
    description = "NVFP4 x NVFP4 -> fp16: PTX e2m1 decode to fp16 in registers, fp16 wgmma, split-K (Triton)"


class Sm90Mxfp4(HopperKernel):
    name = "sm90-mxfp4-triton"
    formats = ("mxfp4",)
    math_path = "bf16"
    description = "MXFP4 x MXFP4 -> bf16: exact bf16 dequantize in registers, bf16 wgmma, split-K (Triton)"


class Sm90Mxfp4Fp8(HopperKernel):
    name = "sm90-mxfp4-fp8"
    formats = ("mxfp4",)
    math_path = "fp8"
    fp8 = True
    description = ("MXFP4 x MXFP4 -> bf16 on fp8 wgmma: per-row tile exponents factored out, residuals folded "
                   "into exact e4m3; tiles that do not fit run on bf16 (Triton)")


class Sm90W4a16(W4a16Kernel):
    name = "sm90-w4a16-triton"
    archs = ("sm_90a",)
    devices = ("cuda",)
    math_path = "bf16"
    description = ("bf16 activations x NVFP4/MXFP4 weights -> bf16: weights decoded to bf16 in registers as "
                   "wgmma's A operand, split-K (Triton)")


class Sm90Mxfp8(Mxfp8Kernel):
    name = "sm90-mxfp8"
    archs = ("sm_90a",)
    devices = ("cuda",)
    math_path = "bf16"
    mma_dtype = tl.bfloat16
    description = ("MXFP8 x MXFP8 -> bf16, exact: e4m3 on bf16 wgmma (e4m3 is exact in bf16), each 32-deep "
                   "block's e8m0 scales applied in the fp32 accumulator, split-K (Triton)")


class Sm90Mxfp8Fp8(Mxfp8Kernel):
    """sm90-mxfp8's algorithm on fp8 wgmma. On the H200 it failed the exact check (a few hundred elements in
    10^5..10^6, off by up to 2^12 where large products cancel): the fp8 MMA adds within a narrow window, so it
    is approximate by design and is checked against the fp8-MMA bound instead (fp4bench.reference)."""

    name = "sm90-mxfp8-fp8"
    archs = ("sm_90a",)
    devices = ("cuda",)
    math_path = "fp8"
    mma_dtype = tl.float8e4nv
    description = ("MXFP8 x MXFP8 -> bf16, approximate (fp8 MMA adder, bounded): sm90-mxfp8 on fp8 wgmma "
                   "(Triton)")

    def approximation_allowance(self, problem):
        return fp8_mma_allowance(problem)


class HopperProblemKernel(TritonProblemKernel):
    """The competition's other NVFP4 problems on sm_90a: PTX decode (cvt from e4m3), so Hopper only."""

    archs = ("sm_90a",)
    devices = ("cuda",)
    formats = ("nvfp4",)
    use_asm = True


class Sm90Gemv(HopperProblemKernel):
    name = "sm90-gemv"
    problems = (GEMV,)
    ops = gemv
    math_path = "fp32"
    description = ("NVFP4 GEMV -> fp16: rows of A streamed on the CUDA cores, PTX decode to fp16, exact fp32 "
                   "products and sums, split-K when rows are few (Triton)")


class Sm90DualGemm(HopperProblemKernel):
    name = "sm90-dual-gemm"
    problems = (DUAL_GEMM,)
    ops = dual_gemm
    math_path = "fp16"
    description = ("NVFP4 silu(A B1^T) * (A B2^T) -> fp16 in one kernel: shared A tile, two fp16 wgmma "
                   "accumulators, fp32 epilogue, split-K (Triton)")


class Sm90GroupGemm(HopperProblemKernel):
    name = "sm90-group-gemm"
    problems = (GROUP_GEMM,)
    ops = group_gemm
    math_path = "fp16"
    # A new set of input addresses copies a pointer table to the device.
    graph_safe = False
    description = ("NVFP4 grouped GEMM -> fp16 in one launch: host tile schedule over all groups, per-group "
                   "pointer table, fp16 wgmma (Triton)")


KERNELS = (Sm90Nvfp4(), Sm90Mxfp4(), Sm90Mxfp4Fp8(), Sm90W4a16(), Sm90Mxfp8(), Sm90Mxfp8Fp8(), Sm90Gemv(),
           Sm90DualGemm(), Sm90GroupGemm())
