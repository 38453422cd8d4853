"""Checking one kernel on one case: generate, skip with a reason, poison, run, compare.

Used by `verify` and by `run` (which times only what passed here). Any exception a kernel raises is
caught and reported as an error of that case, so one broken kernel never ends a run (a kernel that kills
its process is the business of fp4bench.isolation). Every correctness call goes through the integrity
checks of fp4bench.integrity: poisoned and guarded output, untouched inputs, no aliasing, no cache.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

import torch

from . import integrity
from .arch import Target
from .checking import CheckResult
from .formats import GemmFormat
from .kernels.base import Kernel
from .problem import Problem, Shape, generate
from .reference import Expected, expected_output

STATUS_PASS = "pass"
STATUS_FAIL = "fail"
STATUS_SKIP = "skip"
STATUS_ERROR = "error"
FAILING_STATUSES = (STATUS_FAIL, STATUS_ERROR)
# With a single seed, the cache check draws one more input this far from it.
CACHE_PROBE_STRIDE = 42


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
    # Integrity findings (fp4bench.integrity), one line each; notes such as nondeterminism keep status pass.
    findings: list[str] = field(default_factory=list)
    # Largest difference between two runs on the same input (0.0: bitwise identical); None if not measured.
    run_to_run_diff: float | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILING_STATUSES


# Bytes per output element that check_output's float64 temporaries take (expected, got, diff, allowed, rel,
# masks) and that the float32 references take (this seed's and the previous one, for the cache check, each
# with its accumulation allowance).
CHECK_BYTES_PER_OUTPUT = 6 * 8 + 4 * 4


def case_bytes(shape: Shape, fmt: GemmFormat) -> int:
    """Estimated peak memory of `verify_case` on one shape: what it holds at once, to refuse hopeless sizes.

    Inputs three times (the tensors, the blocked scale copies, the integrity snapshot), four outputs (the
    generated c, the guarded c, two kept copies), the checker's temporaries, and the float32 dequantized
    operands of one batch twice (the codec's intermediate and its result).
    """
    s = shape
    elements = s.m * s.n * s.l
    inputs = (fmt.a.bytes_for(s.m, s.k) + fmt.b.bytes_for(s.n, s.k)) * s.l
    out = elements * torch.empty((), dtype=fmt.out_dtype).element_size()
    dequantized = 2 * 4 * (s.m + s.n) * s.k
    return 3 * inputs + 4 * out + 2 * integrity.GUARD_BYTES + CHECK_BYTES_PER_OUTPUT * elements + dequantized


def synchronize(target: Target) -> None:
    if target.device == "cuda":
        torch.cuda.synchronize(target.index)


def one_line(exc: BaseException) -> str:
    """An exception as one line, with the innermost frame that raised it."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {msg}{where}"


def check_kernel_once(fn, problem: Problem, target: Target, expected: Expected | None = None) -> CheckResult:
    """Run `fn` once on `problem` (poisoned, guarded output) and check it; integrity findings fail the check."""
    return checked_call(fn, problem, target, expected).to_check_result()


def checked_call(fn, problem: Problem, target: Target, expected: Expected | None = None) -> integrity.CheckedRun:
    """One guarded call of `fn` (see fp4bench.integrity); the reference is computed when not given."""
    if expected is None:
        expected = expected_output(problem)
    return integrity.checked_run(fn, problem, expected, lambda: synchronize(target))


def recheck_case(fn, shape: Shape, fmt: GemmFormat, target: Target, seed: int) -> CheckResult:
    """The post-timing re-check: one more guarded correctness call on fresh inputs drawn with `seed`.

    The engine calls it after timing a kernel with a seed none of the checked or timed inputs used, so a
    kernel that is right on its first calls and returns stale or cached results later fails here.
    """
    problem = generate(shape.with_seed(seed), fmt, target.torch_device)
    return check_kernel_once(fn, problem, target)


def verify_case(kernel: Kernel, shape: Shape, fmt: GemmFormat, target: Target, seeds: list[int]) -> CaseOutcome:
    """Check `kernel` on `shape` for every seed; the first failing seed decides the outcome.

    Every call is guarded (fp4bench.integrity). Outputs of consecutive seeds are compared to catch a cache
    (with a single seed, one extra probe seed is drawn), and the first seed is run a second time to report
    run-to-run differences (`outcome.run_to_run_diff`; a nonzero value is a note, not a failure).
    """
    start = time.perf_counter()
    outcome = CaseOutcome(kernel.name, fmt.name, shape, STATUS_PASS, seeds=list(seeds))
    probe_seeds = list(seeds) if len(seeds) > 1 else [seeds[0], seeds[0] + CACHE_PROBE_STRIDE]
    worst: CheckResult | None = None
    first: tuple[integrity.CheckedRun, torch.Tensor] | None = None
    previous: tuple[integrity.CheckedRun, torch.Tensor] | None = None
    for i, seed in enumerate(probe_seeds):
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
        expected = expected_output(problem)
        ref = expected.values
        try:
            run = checked_call(fn, problem, target, expected)
        except Exception as e:
            outcome.status, outcome.reason = STATUS_ERROR, one_line(e)
            break
        cached = previous and integrity.cached_output(previous[0], run, previous[1], ref)
        if cached:
            run.findings.insert(0, cached)
        result = run.to_check_result()
        if worst is None or not result.passed or result.max_abs_err > worst.max_abs_err:
            worst = result
        if not result.passed:
            outcome.status, outcome.reason = STATUS_FAIL, f"seed {seed}: {result.reason}"
            outcome.findings = [str(f) for f in run.findings]
            break
        previous = (run, ref)
        first = first or (run, expected)
    if outcome.status == STATUS_PASS and first is not None:
        _determinism_rerun(fn, shape.with_seed(probe_seeds[0]), fmt, target, first, outcome)
    outcome.check = worst
    outcome.seconds = time.perf_counter() - start
    return outcome


def _determinism_rerun(fn, shape: Shape, fmt: GemmFormat, target: Target, first, outcome: CaseOutcome) -> None:
    """Run the first input again (regenerated: same seed, same data) and record the run-to-run difference."""
    first_run, first_expected = first
    problem = generate(shape, fmt, target.torch_device)
    try:
        again = checked_call(fn, problem, target, first_expected)
    except Exception as e:
        outcome.status, outcome.reason = STATUS_ERROR, f"second run on the same input: {one_line(e)}"
        return
    if not again.passed:
        outcome.status = STATUS_FAIL
        outcome.reason = f"second run on the same input (seed {shape.seed}) failed: {again.reason()}"
        outcome.findings = [str(f) for f in again.findings]
        return
    diff, note = integrity.nondeterminism_finding(first_run.output, again.output)
    outcome.run_to_run_diff = diff
    if note is not None:
        outcome.findings.append(str(note))
        outcome.reason = str(note)
