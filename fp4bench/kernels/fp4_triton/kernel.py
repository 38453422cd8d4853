"""The `Kernel` entry shared by the FP4 Triton GEMMs: their launch candidates, and prepare.

Configuration (`Kernel.chosen_config`; deterministic, no timing at run time):
  1. on a GPU, the tuned table of this GPU model (fp4bench.config_table), written by `fp4bench tune`;
  2. otherwise the heuristic: the first of the kernel's candidates (`GPU_CANDIDATES[0]`, the best on
     average over the benchmark shapes when it was chosen) with split-K fitted to the SM count in whole
     waves (`launch.choose_split_k`); on the CPU, `CPU_CONFIG`.
The chosen configuration, resolved for the shape, is what `launch_config(problem)` returns and what the
results record.
"""

from __future__ import annotations

from types import ModuleType
from typing import ClassVar

import torch
import triton.language as tl

from ...problem import Problem
from ..base import Kernel, RunFn, triton_interpreting
from . import w4a16
from .launch import (
    CPU_CONFIG,
    GPU_CANDIDATES,
    MXFP8_CPU_CONFIG,
    MXFP8_GPU_CANDIDATES,
    LaunchConfig,
    launch_gemm,
    launch_mxfp8,
    resolve,
)


class TritonKernel(Kernel):
    """A Triton kernel: on the CPU only under Triton's interpreter, on a GPU only without it. `prepare` builds
    the chosen configuration through the subclass's `prepare_config`."""

    graph_safe = True

    def unavailable_reason(self, target):
        reason = super().unavailable_reason(target)
        if reason:
            return reason
        if target.device == "cpu" and not triton_interpreting():
            return "runs on the CPU only under Triton's interpreter: set TRITON_INTERPRET=1 before starting"
        if target.device == "cuda" and triton_interpreting():
            return "TRITON_INTERPRET=1 is set: Triton kernels run in the CPU interpreter, not on the GPU"
        return None

    def prepare(self, problem: Problem) -> RunFn:
        return self.prepare_config(problem, self.chosen_config(problem)[0])


class LaunchConfigKernel(TritonKernel):
    """A Triton GEMM configured by a `launch.LaunchConfig` (tile, warps, stages, split-K fitted to the shape)."""

    def launch_config(self, problem: Problem) -> dict:
        config, source = self.chosen_config(problem)
        return {**resolve(LaunchConfig.from_dict(config), problem.shape, problem.device).to_dict(), "source": source}


class TritonFp4Kernel(LaunchConfigKernel):
    """The tile kernels of gemm.py / gemm_fp8.py; subclasses fix formats, targets, decoding and the math path."""

    use_asm = False
    fp8 = False

    def candidates(self, problem: Problem) -> tuple[LaunchConfig, ...]:
        """Configurations worth tuning for this problem, the heuristic default first."""
        if problem.device.type != "cuda":
            return (CPU_CONFIG,)
        if not problem.fmt.a.block_scaled or self.fp8:
            return GPU_CANDIDATES
        # fp4 x fp4: each tile config also with A dequantized once in a first kernel.
        return GPU_CANDIDATES + tuple(LaunchConfig(**{**c.to_dict(), "pre_dequant_a": True}) for c in GPU_CANDIDATES)

    def tuning_candidates(self, problem: Problem) -> tuple[dict, ...]:
        return tuple(c.to_dict() for c in self.candidates(problem))

    def prepare_config(self, problem: Problem, config: dict) -> RunFn:
        shape, fmt = problem.shape, problem.fmt
        plan = resolve(LaunchConfig.from_dict(config), shape, problem.device)
        use_asm, fp8 = self.use_asm, self.fp8
        # One launch on a scratch output compiles the kernel and allocates the split-K workspace here, outside
        # any timed region or CUDA-graph capture.
        launch_gemm(problem.data[:6] + (torch.empty_like(problem.c),), shape, fmt, plan, use_asm, fp8)
        return lambda data: launch_gemm(data, shape, fmt, plan, use_asm, fp8)


class Mxfp8Kernel(LaunchConfigKernel):
    """MXFP8 x MXFP8 on the per-block-promotion kernel of mxfp8.py; subclasses fix the MMA dtype (`mma_dtype`,
    a Triton dtype; the CPU interpreter always multiplies the exact values in float32)."""

    formats = ("mxfp8",)
    mma_dtype = None

    def tuning_candidates(self, problem: Problem) -> tuple[dict, ...]:
        configs = MXFP8_GPU_CANDIDATES if problem.device.type == "cuda" else (MXFP8_CPU_CONFIG,)
        return tuple(c.to_dict() for c in configs)

    def prepare_config(self, problem: Problem, config: dict) -> RunFn:
        shape = problem.shape
        plan = resolve(LaunchConfig.from_dict(config), shape, problem.device)
        mma = tl.float32 if problem.device.type == "cpu" else self.mma_dtype
        # One launch on a scratch output compiles the kernel and allocates the split-K workspace here.
        launch_mxfp8(problem.data[:6] + (torch.empty_like(problem.c),), shape, plan, mma)
        return lambda data: launch_mxfp8(data, shape, plan, mma)


class W4a16Kernel(TritonKernel):
    """bf16 activations x FP4 weights on the swapped, register-decoding kernel of w4a16.py."""

    formats = ("w4a16-nvfp4", "w4a16-mxfp4")
    tiles = w4a16.HOPPER_TILES   # the tile classes of the heuristic and of tuning

    def can_implement(self, problem: Problem) -> str | None:
        if problem.a.stride(1) != 1:
            return "needs K-major activations (A[:, k, :] contiguous along K)"
        return None

    def tuning_candidates(self, problem: Problem) -> tuple[dict, ...]:
        return w4a16.candidates(problem.shape, problem.device, self.tiles)

    def prepare_config(self, problem: Problem, config: dict) -> RunFn:
        weights = problem.fmt.b
        run = w4a16.prepare_w4a16(problem.data, problem.shape, weights.scale.power_of_two, weights.block_size,
                                  config, interpret=triton_interpreting())
        # One launch on a scratch output compiles the kernel and allocates the workspace here, outside any timed
        # region or CUDA-graph capture.
        run(problem.data[:6] + (torch.empty_like(problem.c),))
        return run


class TritonProblemKernel(TritonKernel):
    """A kernel of one of the competition's other NVFP4 problems (GEMV, dual GEMM, grouped GEMM).

    `ops` is the module that runs it (gemv.py, dual_gemm.py, group_gemm.py), with one interface:
    candidates(device), resolve(data, config, device) -> plan, launch(data, plan, use_asm) -> output,
    scratch_output(data) and can_implement(data). Sizes come from the input tuple itself."""

    ops: ClassVar[ModuleType]
    use_asm = False

    def can_implement(self, problem: Problem) -> str | None:
        return self.ops.can_implement(problem.data)

    def tuning_candidates(self, problem: Problem) -> tuple[dict, ...]:
        return self.ops.candidates(problem.device)

    def launch_config(self, problem: Problem) -> dict:
        config, source = self.chosen_config(problem)
        return {**self.ops.resolve(problem.data, config, problem.device), "source": source}

    def prepare_config(self, problem: Problem, config: dict) -> RunFn:
        ops, use_asm = self.ops, self.use_asm
        plan = ops.resolve(problem.data, config, problem.device)
        # One launch on a scratch output compiles the kernel and allocates workspaces and tables here, outside
        # any timed region or CUDA-graph capture.
        ops.launch(ops.scratch_output(problem.data), plan, use_asm)
        return lambda data: ops.launch(data, plan, use_asm)
