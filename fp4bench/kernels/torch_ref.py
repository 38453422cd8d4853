"""`torch-ref`: dequantize with fp4bench's codecs and multiply in float32, on CPU or GPU.

The simplest correct kernel: the yardstick for every other and the one CI can run anywhere.
It reads the row-major scales (data[2], data[3]); any M, N and legal K.
"""

from __future__ import annotations

import torch

from ..formats import GEMM_FORMATS
from ..problem import Problem
from ..reference import reference_gemm
from .base import Kernel, RunFn


class TorchReference(Kernel):
    name = "torch-ref"
    formats = tuple(GEMM_FORMATS)
    description = "dequantize + float32 matmul in torch (CPU or GPU)"

    def prepare(self, problem: Problem) -> RunFn:
        shape, fmt = problem.shape, problem.fmt

        def run(data: tuple) -> torch.Tensor:
            c = data[6]
            c.copy_(reference_gemm(Problem(shape, fmt, data, c.device)).to(fmt.out_dtype))
            return c

        return run


KERNELS = (TorchReference(),)
