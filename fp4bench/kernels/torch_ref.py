"""`torch-ref`: dequantize with fp4bench's codecs and multiply in float32, on CPU or GPU.

The simplest correct kernel: the yardstick for every other and the one CI can run anywhere. It computes
every problem kind (fp4bench.reference: GEMM, GEMV, dual GEMM, grouped GEMM) from the row-major scales
(sfa, sfb...); any M, N and legal K.
"""

from __future__ import annotations

from ..formats import GEMM_FORMATS
from ..problem import PROBLEM_KINDS, Problem
from ..reference import reference
from .base import Kernel, RunFn


class TorchReference(Kernel):
    name = "torch-ref"
    formats = tuple(GEMM_FORMATS)
    problems = PROBLEM_KINDS
    description = "dequantize + float32 matmul in torch (CPU or GPU)"

    def prepare(self, problem: Problem) -> RunFn:
        shape, fmt, kind, spec = problem.shape, problem.fmt, problem.kind, problem.spec

        def run(data) -> object:
            outputs = spec.outputs(data)
            values = reference(Problem(shape, fmt, data, outputs[0].device, kind))
            for c, v in zip(outputs, values if isinstance(values, list) else [values]):
                c.copy_(v.to(fmt.out_dtype))
            return spec.result(outputs)

        return run


KERNELS = (TorchReference(),)
