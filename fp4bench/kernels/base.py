"""The uniform kernel entry point.

Every kernel and every baseline is a `Kernel`: a name, the problem kinds and GEMM formats it supports, the
compile targets it runs on, and one required method, `prepare(problem) -> callable`. The engine hands
`prepare` the whole `Problem` (kind, format from the registry, shape, inputs), outside any timed region:
that is where a kernel builds, picks its launch configuration and allocates workspaces. The callable it
returns takes an input set of the case (`problem.data`, or another one: same kind, format and shape, other
values), as the product of `prepare_inputs` (below; by default the input tuple itself), and returns the
output; it is what the engine checks and times.

Kernels with launch choices list them (`tuning_candidates`), build one (`prepare_config`) and get the one to
run from `chosen_config`: the GPU model's tuned table (fp4bench.config_table), else their heuristic, never a
timing at run time. `can_implement(problem) -> reason or None` states shape limits; `unavailable_reason(target)` whether the
kernel can run on this machine at all (target arch, missing toolchain); `reason_to_skip(problem, target)`
combines them with the kind and format checks and is what the engine asks. Every "no" is a sentence.

A kernel is checked against the exact reference. One that approximates by design (a baseline that requantizes
its operands, say) says so with `approximation_allowance(problem)`: a per-element bound, derived from its
documented approximation, that the check adds to that kernel's bound alone.

Per-input-set preparation (`prepare_inputs(problem, data) -> product`), the one sanctioned way to do work per
input set outside the timed region: the engine calls it for every input set after its contents are filled or
refilled (the timed calls rotate among input sets whose contents change between samples, fp4bench.audit),
never inside a timed sample, and the callable from `prepare` receives its product instead of the input tuple.
It is for conversions a baseline declares as not part of what it times (cublas-dense dequantizes its operands
there, torch-scaled-fp8 requantizes them, a W4A16 library converts its weights to its own layout). The product
is derived from the contents of `data` alone, never remembered across calls by address: the same buffers come
back with other contents. It may synchronise the host; it must not write into `data` (a check of every call
compares the inputs bit for bit). The default is `data` itself. `prepared(problem)` pairs the two (`Prepared`:
called on an input tuple, it prepares and runs, as every correctness call does). A competition submission
(fp4bench.kernels.external) gets no such step: everything its `custom_kernel` does is timed.
Caches of what does not depend on the contents (workspaces, argument structs or device tables keyed by
addresses and strides) stay inside the callable; the engine makes one untimed call on every fresh input set
before timing it, so a cache miss never lands in a sample.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import partial
from typing import Callable, ClassVar

import torch

from ..arch import Target
from ..config_table import tuned_config
from ..problem import GEMM, Problem

RunFn = Callable[[object], torch.Tensor]
# Where a launch configuration came from (recorded with it).
SOURCE_TUNED = "tuned"
SOURCE_HEURISTIC = "heuristic"


@dataclass(frozen=True)
class Prepared:
    """A prepared kernel: the callable that is timed, and the per-input-set preparation whose product it takes.

    Called on an input tuple it does both (what every untimed correctness call does); the timing loop calls
    `inputs` outside the timed region and times `run` alone."""

    run: RunFn
    inputs: Callable[[object], object]

    def __call__(self, data):
        return self.run(self.inputs(data))


def triton_interpreting() -> bool:
    """Whether Triton runs in its CPU interpreter (TRITON_INTERPRET set to anything but empty or 0)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def gpu_model(device: torch.device) -> str | None:
    """The GPU model name the tuned tables are kept by (None for the CPU)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


class Kernel(ABC):
    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    # Problem kinds (fp4bench.problem.PROBLEM_KINDS) the kernel computes.
    problems: ClassVar[tuple[str, ...]] = (GEMM,)
    # Compile targets the kernel runs on; None means any device, the CPU included.
    archs: ClassVar[tuple[str, ...] | None] = None
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    role: ClassVar[str] = "kernel"   # "kernel" or "baseline"
    description: ClassVar[str] = ""
    # Whether a CUDA graph may capture the prepared callable (no host synchronisation, no allocation).
    graph_safe: ClassVar[bool] = True
    # A competition-style submission file (fp4bench.kernels.external): `--strict-submission` applies to it.
    submission: ClassVar[bool] = False
    # Tensor-core input type the kernel multiplies in ("fp4", "fp8", "fp16", "bf16", "fp32"); it picks the
    # matrix rate of the speed-of-light bound (fp4bench.sol). None: the format's exact dense dtype.
    math_path: ClassVar[str | None] = None

    def approximation_allowance(self, problem: Problem) -> torch.Tensor | None:
        """[M, N, L] float32 bound on what this kernel's documented approximation may add to the error of an
        exact computation, or None (the default: the kernel claims exactness)."""
        return None

    def can_implement(self, problem: Problem) -> str | None:
        """Why this kernel cannot compute this problem (shape, alignment), or None."""
        return None

    def unavailable_reason(self, target: Target) -> str | None:
        """Why this kernel cannot run on `target` at all, or None."""
        names = [a.rstrip("a") for a in self.archs or ()]
        needs = " or ".join(filter(None, [", ".join(names[:-1]), names[-1]])) if names else None
        if target.device not in self.devices:
            if needs and target.device == "cpu":
                return f"needs {needs}; this machine has no GPU"
            return f"runs on {'/'.join(self.devices)}, not {target.device}"
        if self.archs is not None and target.arch not in self.archs:
            return f"needs {needs}; this GPU is {target.arch.rstrip('a')}"
        return None

    def unsupported_reason(self, kind: str, fmt_name: str, target: Target) -> str | None:
        """Why this kernel cannot take any problem of this kind and format on `target` (no inputs needed)."""
        if kind not in self.problems:
            return f"does not compute {kind} problems (computes {', '.join(self.problems)})"
        if fmt_name not in self.formats:
            return f"does not support format {fmt_name} (supports {', '.join(self.formats)})"
        return self.unavailable_reason(target)

    def reason_to_skip(self, problem: Problem, target: Target) -> str | None:
        return self.unsupported_reason(problem.kind, problem.fmt.name, target) or self.can_implement(problem)

    @property
    def tunable(self) -> bool:
        """Whether the kernel has launch configurations to choose from (it overrides `tuning_candidates`)."""
        return type(self).tuning_candidates is not Kernel.tuning_candidates

    def tuning_candidates(self, problem: Problem) -> tuple[dict, ...]:
        """Launch configurations `fp4bench tune` may time for this problem, the heuristic's choice first."""
        return ()

    def heuristic_config(self, problem: Problem) -> dict | None:
        """The configuration for a shape the tuned table has no entry for: by default the first candidate."""
        candidates = self.tuning_candidates(problem)
        return dict(candidates[0]) if candidates else None

    def chosen_config(self, problem: Problem) -> tuple[dict | None, str | None]:
        """(configuration, "tuned" | "heuristic"): the GPU model's tuned table first, else the heuristic.

        Deterministic: nothing is timed here, so every process runs the same configuration."""
        if not self.tunable:
            return None, None
        model = gpu_model(problem.device)
        if model is not None:
            stored = tuned_config(model, self.name, problem.fmt.name, problem.shape)
            if stored is not None:
                return stored, SOURCE_TUNED
        return self.heuristic_config(problem), SOURCE_HEURISTIC

    def launch_config(self, problem: Problem) -> dict | None:
        """The launch parameters `prepare(problem)` uses and where they came from, for the record.

        None for kernels without launch choices of their own (library calls, the reference)."""
        config, source = self.chosen_config(problem)
        return None if config is None else {**config, "source": source}

    def prepare_config(self, problem: Problem, config: dict) -> RunFn:
        """`prepare` with the given launch configuration (one of `tuning_candidates`) instead of the chosen one."""
        raise NotImplementedError(f"{self.name} has no launch configurations to choose from")

    @abstractmethod
    def prepare(self, problem: Problem) -> RunFn:
        """Everything done once per case (build, configuration, workspaces); returns the callable to run."""

    def prepare_inputs(self, problem: Problem, data):
        """What the callable of `prepare(problem)` takes for the input set `data` (a tuple of the case's kind),
        computed outside the timed region after every (re)fill of that set's contents (module docstring).
        Default: `data` itself."""
        return data

    def prepared(self, problem: Problem, config: dict | None = None) -> Prepared:
        """`prepare(problem)` (or `prepare_config` with `config`) with this kernel's per-input-set preparation."""
        run = self.prepare(problem) if config is None else self.prepare_config(problem, config)
        return Prepared(run, partial(self.prepare_inputs, problem))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
