"""`torch-ref`: dequantize with fp4bench's codecs and multiply in float32, on CPU or GPU.

The simplest correct kernel: the yardstick for every other and the one CI can run anywhere.
It reads the row-major scales (data[2], data[3]); any M, N and legal K.
"""

from __future__ import annotations

import torch

from ..formats import GEMM_FORMATS
from ..problem import Problem, Shape, infer_format
from ..reference import reference_gemm
from .base import Kernel


class TorchReference(Kernel):
    name = "torch-ref"
    formats = tuple(GEMM_FORMATS)
    description = "dequantize + float32 matmul in torch (CPU or GPU)"

    def run(self, data: tuple) -> torch.Tensor:
        fmt = infer_format(data)
        m, _, l = data[0].shape
        n = data[1].shape[0]
        k = data[1].shape[1] * fmt.b.element.per_byte
        problem = Problem(Shape(m, n, k, l), fmt, data, data[0].device)
        out = reference_gemm(problem).to(fmt.out_dtype)
        c = data[6]
        c.copy_(out)
        return c


KERNELS = (TorchReference(),)
