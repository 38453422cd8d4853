"""Checking one kernel on one case: generate, skip with a reason, poison, run, compare.

Used by `verify` and by `run` (which times only what passed here). Any exception a kernel raises is
caught and reported as an error of that case, so one broken kernel never ends a run.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

import torch

from .arch import Target
from .checking import CheckResult, check_output
from .formats import GemmFormat
from .kernels.base import Kernel
from .problem import Problem, Shape, generate, poison_output
from .reference import reference_gemm

STATUS_PASS = "pass"
STATUS_FAIL = "fail"
STATUS_SKIP = "skip"
STATUS_ERROR = "error"
FAILING_STATUSES = (STATUS_FAIL, STATUS_ERROR)


@dataclass
class CaseOutcome:
    kernel: str
    fmt: str
    shape: Shape
    status: str
    reason: str | None = None
    check: CheckResult | None = None
    seeds: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status in FAILING_STATUSES


def synchronize(target: Target) -> None:
    if target.device == "cuda":
        torch.cuda.synchronize(target.index)


def one_line(exc: BaseException) -> str:
    """An exception as one line, with the innermost frame that raised it."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {msg}{where}"


def check_kernel_once(fn, problem: Problem, target: Target) -> CheckResult:
    """Run `fn` on a poisoned copy of the problem's output and compare with the exact reference."""
    ref = reference_gemm(problem)
    poisoned = poison_output(problem)
    out = fn(poisoned.data)
    synchronize(target)
    return check_output(out, ref, problem.fmt.out_dtype)


def verify_case(kernel: Kernel, shape: Shape, fmt: GemmFormat, target: Target, seeds: list[int]) -> CaseOutcome:
    """Check `kernel` on `shape` for every seed; the first failing seed decides the outcome."""
    start = time.perf_counter()
    outcome = CaseOutcome(kernel.name, fmt.name, shape, STATUS_PASS, seeds=list(seeds))
    worst: CheckResult | None = None
    for i, seed in enumerate(seeds):
        problem = generate(shape.with_seed(seed), fmt, target.torch_device)
        if i == 0:
            reason = kernel.reason_to_skip(problem, target)
            if reason:
                outcome.status, outcome.reason = STATUS_SKIP, reason
                break
            try:
                fn = kernel.prepare(problem)
            except Exception as e:  # a kernel may fail to build or set up in any way
                outcome.status, outcome.reason = STATUS_ERROR, f"prepare failed: {one_line(e)}"
                break
        try:
            result = check_kernel_once(fn, problem, target)
        except Exception as e:
            outcome.status, outcome.reason = STATUS_ERROR, one_line(e)
            break
        if worst is None or not result.passed or result.max_abs_err > worst.max_abs_err:
            worst = result
        if not result.passed:
            outcome.status, outcome.reason = STATUS_FAIL, f"seed {seed}: {result.reason}"
            break
    outcome.check = worst
    outcome.seconds = time.perf_counter() - start
    return outcome
