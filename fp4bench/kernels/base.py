"""The uniform kernel entry point.

Every kernel and every baseline is a `Kernel`: a name, the GEMM formats and compile targets it supports,
`can_implement(problem) -> reason or None` for shape limits, and `run(data) -> c` taking the competition's
data tuple. `prepare(problem)` runs once per case outside the timed region (build, autotune, pick a tile
config) and returns the callable that is checked and timed; by default that is `run` itself.

`unavailable_reason(target)` answers whether the kernel can run on this machine at all (target arch,
missing toolchain); `reason_to_skip(problem, target)` combines both checks and is what the harness uses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar

import torch

from ..arch import Target
from ..problem import Problem

RunFn = Callable[[tuple], torch.Tensor]


class Kernel(ABC):
    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    # Compile targets the kernel runs on; None means any device, the CPU included.
    archs: ClassVar[tuple[str, ...] | None] = None
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    role: ClassVar[str] = "kernel"   # "kernel" or "baseline"
    description: ClassVar[str] = ""
    # Whether a CUDA graph may capture `run` (no host synchronisation, no allocation surprises).
    graph_safe: ClassVar[bool] = True
    # Tensor-core input type the kernel multiplies in ("fp4", "fp8", "fp16", "bf16", "fp32"); it picks the
    # matrix rate of the speed-of-light bound (fp4bench.sol). None: the format's exact dense dtype.
    math_path: ClassVar[str | None] = None

    def can_implement(self, problem: Problem) -> str | None:
        """Why this kernel cannot compute this problem (shape, alignment), or None."""
        return None

    def unavailable_reason(self, target: Target) -> str | None:
        """Why this kernel cannot run on `target` at all, or None."""
        needs = None if self.archs is None else "/".join(a.rstrip("a") for a in self.archs)
        if target.device not in self.devices:
            if needs and target.device == "cpu":
                return f"needs {needs}; this machine has no GPU"
            return f"runs on {'/'.join(self.devices)}, not {target.device}"
        if self.archs is not None and target.arch not in self.archs:
            return f"needs {needs}; this GPU is {target.arch.rstrip('a')}"
        return None

    def reason_to_skip(self, problem: Problem, target: Target) -> str | None:
        if problem.fmt.name not in self.formats:
            return f"does not support format {problem.fmt.name} (supports {', '.join(self.formats)})"
        return self.unavailable_reason(target) or self.can_implement(problem)

    def prepare(self, problem: Problem) -> RunFn:
        return self.run

    @abstractmethod
    def run(self, data: tuple) -> torch.Tensor:
        ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
