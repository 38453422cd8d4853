"""The case life cycle, used by both `run` and `verify`: load -> check -> (tune) -> time -> re-check.

`run_case(spec) -> CaseRecord` is a module-level function with picklable values in and out, so it runs in
this process or in a worker process (fp4bench.isolation): a kernel that crashes or hangs costs its own case.
Stages, each a small function; a stage that ends the case raises `CaseEnded(status, reason)`:
  load     the kernel, the target, the SOL estimate; the CPU size limit of a timed run.
  check    `check_case` on `spec.check_seeds` fresh inputs (seed, seed + 42, ...: the competition's stride):
           NaN-poisoned, guarded output, integrity checks (fp4bench.integrity), a cache probe between inputs,
           a second run of the first input for run-to-run differences; on a GPU the persisting-L2 state after
           every call (fp4bench.audit.L2Policy); for a submission file with `spec.strict_submission`, its
           imports and a traced first call (fp4bench.strict). A failure here is never timed.
  tune     only with `spec.tune`: time each of the kernel's candidate configurations, keep the fastest
           unless the incumbent (the tuned table's entry) is within both measurements' noise.
  time     `timing.time_kernel` over input sets that no check used, refilled between samples and with sampled
           timed outputs checked (fp4bench.audit.TimedAudit); graph mode falls back to eager when a kernel
           cannot be captured (noted in the record). A median under half the case's physical floor fails
           (fp4bench.sol.below_floor).
  re-check one more guarded call on fresh inputs after timing: a kernel that turns stale after its first
           calls fails here, and its timing is dropped.
`verify` is a run whose spec has no timing options: load and check only. Every stage works for every problem
kind (`spec.problem`; fp4bench.problem.KindSpec): inputs, outputs, references and sizes come from the kind.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from . import integrity
from .arch import Target
from .case import CaseRecord, CaseSpec, CaseStatus, kernel_label, one_line
from .checking import CheckResult
from .formats import GemmFormat
from .kernels.base import Kernel, Prepared
from .problem import GEMM, Problem, Shape, generate, kind_spec, min_bytes
from .reference import Expected, expected_output

# Bytes per output element that check_output's float64 temporaries take (expected, got, diff, allowed, rel,
# masks) and that the float32 references take (this seed's and the previous one, for the cache check, each
# with its accumulation allowance).
CHECK_BYTES_PER_OUTPUT = 6 * 8 + 4 * 4
# Math paths whose tensor cores do not add in full fp32: Hopper's fp8 MMA keeps about 14 bits of its
# accumulator's mantissa, so exact data does not make its sums exact.
REDUCED_PRECISION_ACCUMULATION = {"fp8"}


class CaseEnded(Exception):
    """A stage ended the case: its status and one-line reason."""

    def __init__(self, status: CaseStatus, reason: str | None, findings: list[str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.findings = status, reason, findings or []


def case_bytes(shape: Shape, fmt: GemmFormat, kind: str = GEMM) -> int:
    """Estimated peak memory of checking one shape: what `check_case` holds at once, to refuse hopeless sizes.

    Inputs three times (the tensors, the blocked scale copies, the integrity snapshot), four outputs (the
    generated c, the guarded c, two kept copies), the checker's temporaries, and the float32 dequantized
    operands of one batch twice (the codec's intermediate and its result).
    """
    spec = kind_spec(kind)
    elements = spec.output_elements(shape)
    out = elements * torch.empty((), dtype=fmt.out_dtype).element_size()
    inputs = min_bytes(shape, fmt, kind) - out
    dequantized = 2 * 4 * spec.operand_elements(shape)
    guards = 2 * integrity.GUARD_BYTES * len(shape.groups)
    return 3 * inputs + 4 * out + guards + CHECK_BYTES_PER_OUTPUT * elements + dequantized


# On a CPU, dequantizing one operand element (codec, float32 expansion, reference and baselines each do it)
# costs about as much as this many GEMM FLOPs: measured on 2 cores, 117 M e2m1 elements take ~0.3 s to decode.
CPU_DEQUANT_FLOPS_PER_ELEMENT = 256


def cpu_work_gflop(shape: Shape, kind: str = GEMM) -> float:
    """A case's work on a CPU in GFLOP: the GEMMs plus dequantizing their operands (which dominates at small M:
    a decode shape of 1 x 7168 x 16384 is 0.2 GFLOP of GEMM but 117 M weight elements)."""
    spec = kind_spec(kind)
    return (spec.flops(shape) + CPU_DEQUANT_FLOPS_PER_ELEMENT * spec.operand_elements(shape)) / 1e9


def synchronize(target: Target) -> None:
    if target.device == "cuda":
        torch.cuda.synchronize(target.index)


# ---------------------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------------------
@dataclass
class CheckOutcome:
    """What the check stage found: the status, the worst checked input, findings and the prepared callable."""

    status: CaseStatus
    reason: str | None = None
    check: CheckResult | None = None
    findings: list[str] = field(default_factory=list)
    # Largest difference between two runs on the same input (0.0: bitwise identical); None if not measured.
    run_to_run_diff: float | None = None
    fn: Prepared | None = None
    problem: Problem | None = None   # the first checked input (prepare saw it)


def fp32_accumulation(kernel: Kernel, fmt: GemmFormat) -> bool:
    """Whether the kernel's math path adds in full fp32 (the premise of the zero allowance where exact fp32
    accumulation is guaranteed, fp4bench.reference): not Hopper's fp8 tensor cores, whose accumulator keeps
    fewer bits."""
    from .sol import math_path_of

    return math_path_of(kernel, fmt) not in REDUCED_PRECISION_ACCUMULATION


def expected_for(kernel: Kernel | None, problem: Problem) -> Expected:
    """The reference of `problem` with the allowance `kernel` gets: none where exact fp32 accumulation is
    guaranteed and the kernel adds in fp32 (fp4bench.reference), widened by the kernel's declared
    approximation (if any)."""
    expected = expected_output(problem, kernel is None or fp32_accumulation(kernel, problem.fmt))
    extra = kernel.approximation_allowance(problem) if kernel is not None else None
    if extra is None:
        return expected
    return Expected(expected.values, expected.allowance + extra.to(expected.allowance.device, torch.float32))


def checked_call(fn, problem: Problem, target: Target, expected=None, held=()) -> integrity.CheckedRun:
    """One guarded call of `fn` (see fp4bench.integrity): `expected` is the reference or a function computing
    it after the call (by default the plain reference of `problem`); `held` the sealed references the caller
    holds meanwhile."""
    if expected is None:
        expected = lambda: expected_output(problem)   # noqa: E731 (computed after the call)
    return integrity.checked_run(fn, problem, expected, lambda: synchronize(target), tuple(held))


def check_once(fn, problem: Problem, target: Target, kernel: Kernel | None = None) -> CheckResult:
    """One guarded call on `problem`, checked (with `kernel`'s declared approximation); integrity findings fail it."""
    return checked_call(fn, problem, target, lambda: expected_for(kernel, problem)).to_check_result()


def _l2_policy(target: Target, notes: list[str]):
    """The persisting-L2 guard of a GPU target, its state reset to the defaults (None on the CPU; None with a
    note in `notes` when cuda-python cannot read it)."""
    if target.device != "cuda":
        return None
    try:
        from .audit import L2Policy

        policy = L2Policy(target.torch_device)
        policy.reset()   # whatever was set before this case is not this kernel's doing
    except (ImportError, RuntimeError) as e:
        notes.append(f"persisting-L2 state not checked ({one_line(e)})")
        return None
    policy.found.clear()
    return policy


def _used_findings(trace, l2, flops: int) -> list[integrity.Finding]:
    """Findings about what a call used rather than what it returned: what the strict trace saw it call
    (fp4bench.strict), what it left in the persisting-L2 state (reset again)."""
    from .strict import trace_findings

    found = trace_findings(trace, flops) if trace is not None else []
    if l2 is not None:
        l2.reset()
        found += [l2.finding()] if l2.finding() is not None else []
    return found


def check_case(kernel: Kernel, shape: Shape, fmt: GemmFormat, target: Target, seeds: list[int],
               kind: str = GEMM, strict: bool = False) -> CheckOutcome:
    """Check `kernel` on `shape` for every seed; the first failing seed decides the outcome.

    Every call is guarded (fp4bench.integrity), its reference computed after it returns, the references
    held from earlier seeds sealed. Outputs of consecutive seeds are compared to catch a cache (with a
    single seed, one extra probe seed is drawn), and the first seed is run a second time to report
    run-to-run differences (a nonzero difference is a note, not a failure). On a GPU the persisting-L2 state
    is read after every call. With `strict`, a submission file's imports are checked and its first call is
    traced (fp4bench.strict).
    """
    from .strict import import_findings, traced

    probe_seeds = list(seeds) if len(seeds) > 1 else [seeds[0], shape.with_seed(seeds[0]).seeds(1, start=1)[0]]
    # Asked before any input is drawn: most skips (another GPU, no toolchain) need none.
    reason = kernel.unsupported_reason(kind, fmt.name, target)
    if reason:
        return CheckOutcome(CaseStatus.SKIP, reason)
    first = generate(shape.with_seed(probe_seeds[0]), fmt, target.torch_device, kind)
    reason = kernel.can_implement(first)
    if reason:
        return CheckOutcome(CaseStatus.SKIP, reason)
    strict = strict and kernel.submission
    if strict:
        found = import_findings(kernel.imports, kernel.namespace, kernel.folder)
        if found:
            return CheckOutcome(CaseStatus.FAIL, str(found[0]), findings=[str(f) for f in found])
    try:
        fn = kernel.prepared(first)
    except Exception as e:  # a kernel may fail to build or set up in any way
        return CheckOutcome(CaseStatus.ERROR, f"prepare failed: {one_line(e)}")
    outcome = CheckOutcome(CaseStatus.PASS, fn=fn, problem=first)
    l2 = _l2_policy(target, outcome.findings)
    kept: tuple[integrity.CheckedRun, Expected] | None = None
    previous: tuple[integrity.CheckedRun, torch.Tensor] | None = None
    held: list[integrity.Seal] = []
    for seed in probe_seeds:
        problem = first if seed == probe_seeds[0] else generate(shape.with_seed(seed), fmt, target.torch_device, kind)
        call, trace = traced(fn, kernel.folder) if strict and kept is None else (fn, None)
        try:
            run = checked_call(call, problem, target, lambda p=problem: expected_for(kernel, p), held)
        except Exception as e:
            used = _used_findings(trace, l2, kind_spec(kind).flops(shape))
            if used:   # what it called decides, not how that failed
                return CheckOutcome(CaseStatus.FAIL, str(used[0]), findings=[str(f) for f in used])
            return CheckOutcome(CaseStatus.ERROR, one_line(e), outcome.check)
        used = _used_findings(trace, l2, kind_spec(kind).flops(shape))
        if used:   # a reason of its own, about no seed in particular
            return CheckOutcome(CaseStatus.FAIL, str(used[0]), run.to_check_result(),
                                [str(f) for f in used + run.findings])
        expected = run.expected
        cached = previous and integrity.cached_output(previous[0], run, previous[1], expected.values)
        if cached:
            run.findings.insert(0, cached)
        result = run.to_check_result()
        if outcome.check is None or not result.passed or result.max_abs_err > outcome.check.max_abs_err:
            outcome.check = result
        if not result.passed:
            return CheckOutcome(CaseStatus.FAIL, f"seed {seed}: {result.reason}", result,
                                [str(f) for f in run.findings])
        previous = (run, expected.values)
        kept = kept or (run, expected)
        held = list({id(e): integrity.Seal.of(e, "the reference of an earlier input") for e in
                     (kept[1], expected)}.values())
    return _determinism_rerun(fn, first.shape, fmt, target, kept, outcome, kind, held)


def _determinism_rerun(fn, shape: Shape, fmt: GemmFormat, target: Target, first, outcome: CheckOutcome,
                       kind: str = GEMM, held=()) -> CheckOutcome:
    """Run the first input again (regenerated: same seed, same data) and record the run-to-run difference."""
    first_run, first_expected = first
    problem = generate(shape, fmt, target.torch_device, kind)
    try:
        again = checked_call(fn, problem, target, first_expected, held)
    except Exception as e:
        return CheckOutcome(CaseStatus.ERROR, f"second run on the same input: {one_line(e)}", outcome.check)
    if not again.passed:
        return CheckOutcome(CaseStatus.FAIL, f"second run on the same input (seed {shape.seed}) failed: "
                                             f"{again.reason()}", outcome.check, [str(f) for f in again.findings])
    if first_run.output is None or again.output is None:
        return outcome
    diff, note = integrity.nondeterminism_finding(first_run.output, again.output)
    outcome.run_to_run_diff = diff
    if note is not None:
        outcome.findings.append(str(note))
        outcome.reason = str(note)
    return outcome


# ---------------------------------------------------------------------------------------------------------
# the stages of one case
# ---------------------------------------------------------------------------------------------------------
@dataclass
class _Case:
    """The state a case builds up as its stages run; `record()` freezes it."""

    spec: CaseSpec
    fmt: GemmFormat
    started: float = field(default_factory=time.perf_counter)
    kernel: Kernel | None = None
    target: Target | None = None
    ceilings: object | None = None   # fp4bench.sol.Ceilings of the device, when measured
    values: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self, status: CaseStatus, reason: str | None = None, findings=()) -> CaseRecord:
        name = self.kernel.name if self.kernel else kernel_label(self.spec.kernel)
        return CaseRecord.ended(self.spec, status, reason, findings=tuple(findings), notes=tuple(self.notes),
                                seconds=time.perf_counter() - self.started,
                                **{"role": self.kernel.role if self.kernel else None, **self.values}
                                ).but(kernel=name)


def _load(case: _Case) -> None:
    from .arch import current_target
    from .kernels import get_kernel
    from .sol import Ceilings, estimate, math_path_of

    spec = case.spec
    try:
        case.kernel = get_kernel(spec.kernel, spec.problem)
        case.target = current_target(spec.device, spec.gpu)
    except Exception as e:  # unknown kernel, unloadable file, missing GPU: one line in the record
        raise CaseEnded(CaseStatus.ERROR, one_line(e)) from None
    if case.target.device == "cuda":
        torch.cuda.set_device(case.target.torch_device)
    case.ceilings = Ceilings.from_dict(spec.ceilings) if spec.ceilings else None
    case.values["sol"] = estimate(spec.shape, case.fmt, math_path_of(case.kernel, case.fmt), case.ceilings,
                                  spec.problem).to_dict()
    limit = spec.timing.cpu_max_gflop if spec.timing is not None else None
    work = cpu_work_gflop(spec.shape, spec.problem)
    if (case.target.device == "cpu" and limit is not None and work > limit
            and not case.kernel.unavailable_reason(case.target)):
        raise CaseEnded(CaseStatus.SKIP, f"{work:.1f} GFLOP of work (the GEMM and dequantizing its operands) is "
                                         f"past the CPU limit of {limit:g} (--cpu-max-gflop; a CPU run is a smoke "
                                         f"check, time on a GPU)")


def _check(case: _Case) -> CheckOutcome:
    spec = case.spec
    outcome = check_case(case.kernel, spec.shape, case.fmt, case.target, spec.shape.seeds(spec.check_seeds),
                         spec.problem, strict=spec.strict_submission)
    case.values["check"] = outcome.check.to_dict() if outcome.check is not None else None
    if outcome.status != CaseStatus.PASS:
        raise CaseEnded(outcome.status, outcome.reason, outcome.findings)
    case.values["config"] = case.kernel.launch_config(outcome.problem)
    return outcome


def _audit(case: _Case, prepared: Prepared, base: Problem, expected: Expected, mode: str):
    """The timed calls' input sets, refilled and checked (fp4bench.audit.TimedAudit), for `mode`."""
    from .audit import TimedAudit, slots_that_fit, tree_bytes
    from .timing import MODE_GRAPH, input_sets_for_cold_l2

    spec, device = case.spec, case.target.torch_device
    if mode == MODE_GRAPH:
        # The flush cannot sit between replayed calls: rotate among enough inputs to exceed L2 instead.
        slots = 2
        if spec.timing.cold_l2:
            slots = input_sets_for_cold_l2(min_bytes(spec.shape, case.fmt, spec.problem), spec.l2_bytes)
    else:
        slots = slots_that_fit(tree_bytes(prepared.inputs(base.data)), device)
    return TimedAudit(base, expected, prepared.run, prepared.inputs, slots=slots, graph=mode == MODE_GRAPH,
                      l2=_l2_policy(case.target, case.notes))


def _measure(case: _Case, prepared: Prepared, base: Problem, expected: Expected):
    from .audit import AuditFailure
    from .timing import MODE_EAGER, MODE_GRAPH, time_kernel

    opts, target = case.spec.timing, case.target
    mode = opts.mode
    if mode == MODE_GRAPH and (target.device != "cuda" or not case.kernel.graph_safe):
        why = "on a CPU" if target.device != "cuda" else f"{case.kernel.name} does not allow graph capture"
        case.notes.append(f"graph mode not used ({why}); timed eagerly")
        mode = MODE_EAGER
    kwargs = dict(device=target.torch_device, options=opts, l2_bytes=case.spec.l2_bytes)
    try:
        return time_kernel(prepared.run, _audit(case, prepared, base, expected, mode), mode=mode, **kwargs)
    except AuditFailure:
        raise
    except Exception as e:
        if mode != MODE_GRAPH:
            raise
        # Capture can fail in ways a kernel cannot declare (a host sync deep in a library): fall back.
        case.notes.append(f"graph capture failed ({one_line(e)}); timed eagerly")
        torch.cuda.synchronize()
        return time_kernel(prepared.run, _audit(case, prepared, base, expected, MODE_EAGER), mode=MODE_EAGER,
                           **kwargs)


def _tune(case: _Case, base: Problem) -> Prepared | None:
    """Time every candidate configuration with fp4bench's own timer; store the winner in the GPU model's table.

    The incumbent (the table's entry) stays unless a challenger is faster beyond both measurements' noise.
    Candidates are timed on two input sets (the base input and a copy in other buffers) without the timed
    calls' checks: the winner's timing that follows has them. Returns the winner's prepared callable (None
    when the kernel has nothing to tune)."""
    from dataclasses import replace as _replace

    from .audit import clone_tree
    from .config_table import store_entry, table_for
    from .timing import TIMER_OWN, time_kernel

    kernel, first = case.kernel, base
    candidates = kernel.tuning_candidates(first)
    if len(candidates) < 2:
        return None
    options = _replace(case.spec.timing, timer=TIMER_OWN)
    sets = [base.data, clone_tree(base.data)]
    timed, prepared = [], {}
    for i, config in enumerate(candidates):
        try:
            prepared[i] = kernel.prepared(first, config)
            inputs = [prepared[i].inputs(data) for data in sets]
            m = time_kernel(prepared[i].run, inputs, device=case.target.torch_device, options=options,
                            l2_bytes=case.spec.l2_bytes)
        except Exception as e:  # a config the compiler or the GPU rejects (shared memory, registers) is skipped
            timed.append({"config": config, "median_us": None, "rse": None, "error": one_line(e)})
            continue
        timed.append({"config": config, "median_us": m.stats.median * 1e6, "rse": m.stats.rse})
    ok = [i for i, t in enumerate(timed) if t["median_us"] is not None]
    if not ok:
        return None
    best = min(ok, key=lambda i: timed[i]["median_us"])
    incumbent = table_for(case.target.name).lookup(kernel.name, case.fmt.name, case.spec.shape)
    held = next((i for i in ok if incumbent and timed[i]["config"] == incumbent["config"]), None)
    if held is not None and not _faster_beyond_noise(timed[best], timed[held]):
        best = held
    case.values["tuning"] = tuple(timed)
    store_entry(case.target.name, kernel.name, case.fmt.name, case.spec.shape,
                {"config": timed[best]["config"], "median_us": timed[best]["median_us"], "rse": timed[best]["rse"],
                 "candidates": timed, "tuned": time.strftime("%Y-%m-%d")})
    case.values["config"] = kernel.launch_config(first)
    return prepared[best]


def _faster_beyond_noise(challenger: dict, incumbent: dict) -> bool:
    """Whether the challenger's median is below the incumbent's by more than both measurements' noise.

    Noise of one median: its relative standard error times the median; the two add in quadrature, and the
    gap must exceed twice that (about a 95% one-sided margin)."""
    a, b = challenger["median_us"], incumbent["median_us"]
    noise = math.hypot((challenger["rse"] or 0) * a, (incumbent["rse"] or 0) * b)
    return b - a > 2 * noise


def _time(case: _Case, checked: CheckOutcome) -> None:
    from .audit import AuditFailure
    from .sol import achieved, below_floor, physical_floor

    spec = case.spec
    # The timed inputs are variants of one base input, drawn with a seed the checks did not use; the re-check
    # after timing takes the next one.
    base_seed, fresh_seed = spec.shape.seeds(2, start=max(spec.check_seeds, 2))
    base = generate(spec.shape.with_seed(base_seed), case.fmt, case.target.torch_device, spec.problem)
    fn = checked.fn
    try:
        expected = expected_for(case.kernel, base)
        if spec.tune:
            fn = _tune(case, base) or fn
        m = _measure(case, fn, base, expected)
    except AuditFailure as e:
        raise CaseEnded(CaseStatus.FAIL, str(e.finding), [str(e.finding)]) from None
    except Exception as e:  # a kernel may break in any way while being timed
        raise CaseEnded(CaseStatus.ERROR, f"while timing: {one_line(e)}") from None
    del base, expected
    try:
        recheck = check_once(fn, generate(case.spec.shape.with_seed(fresh_seed), case.fmt,
                                          case.target.torch_device, case.spec.problem), case.target, case.kernel)
    except Exception as e:
        raise CaseEnded(CaseStatus.ERROR, f"re-check after timing: {one_line(e)}") from None
    if not recheck.passed:
        raise CaseEnded(CaseStatus.FAIL, f"re-check after timing (seed {fresh_seed}): {recheck.reason}")
    floor = physical_floor(spec.shape, case.fmt, case.kernel.math_path, case.ceilings, spec.problem,
                           spec.timing.cold_l2)
    too_fast = below_floor(m.stats.median, floor)
    if too_fast:
        raise CaseEnded(CaseStatus.FAIL, too_fast, [too_fast])
    sol = case.values["sol"]
    case.values["timing"] = m.to_dict(keep_samples=case.spec.timing.keep_samples)
    case.values["metrics"] = achieved(sol["flops"], sol["bytes"], m.stats.median, sol["seconds"])


def run_case(spec: CaseSpec) -> CaseRecord:
    """Check, then (when the spec has timing options) time and re-check one case; returns its record."""
    from .formats import gemm_format

    case = _Case(spec, gemm_format(spec.format))
    try:
        _load(case)
        checked = _check(case)
        if spec.timing is not None:
            _time(case, checked)
    except CaseEnded as end:
        return case.record(end.status, end.reason, end.findings)
    return case.record(CaseStatus.PASS, checked.reason, checked.findings)
