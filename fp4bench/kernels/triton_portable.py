"""`triton-fp4`: the FP4 Triton tile kernel with decoding in plain Triton arithmetic (no inline PTX).

Runs on any CUDA GPU Triton supports and on the CPU under Triton's interpreter (TRITON_INTERPRET=1), which
is how CI checks the tile kernel's logic (split-K, masks, blocked scales) without a GPU. One configuration
(the heuristic's): it is the portability reference, not a tuned kernel.
"""

from __future__ import annotations

from ..problem import Problem
from .fp4_triton.kernel import TritonFp4Kernel


class TritonFp4Portable(TritonFp4Kernel):
    name = "triton-fp4"
    formats = ("nvfp4", "mxfp4", "w4a16-nvfp4", "w4a16-mxfp4")
    archs = None
    devices = ("cpu", "cuda")
    description = "portable Triton FP4 GEMM (plain-Triton decode); on the CPU under TRITON_INTERPRET=1"

    def candidates(self, problem: Problem):
        return super().candidates(problem)[:1]


KERNELS = (TritonFp4Portable(),)
