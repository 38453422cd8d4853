"""Checks a cheating or sloppy kernel cannot pass; fp4bench.pipeline runs every correctness call through them.

One checked call (`checked_run`) of a kernel on a problem:
  * the output c is poisoned with NaN, and it sits inside a larger buffer whose guard regions before and
    after hold a distinctive NaN bit pattern. c is still the [M, N, L] view of an (L, M, N) contiguous
    tensor with the same strides and (256-byte) alignment as without guards, so kernels see no difference;
    any change to a guard byte is a write outside the output.
  * every input tensor is copied before the call and compared bit for bit afterwards: a kernel must not
    modify its inputs (scales included).
  * the returned tensor must not share memory with an input (returning a view of A or of the scales).
  * the returned value is copied on the caller's stream the moment the call returns and compared with what
    it holds after a device-wide synchronize: an output still being written (work in flight on any stream,
    or deferred to a later call) is a finding.
  * the returned value is compared with the exact reference (`checking.check_output`), which is computed
    after the call (a kernel cannot find a reference that does not exist yet and copy it). References the
    harness holds while a kernel runs (an earlier input's, for the cache check) are sealed (`Seal`): one a
    kernel wrote into (NaN, say, so that NaN outputs compare equal) is a finding.
Across calls (`pipeline.check_case` drives these):
  * cached output: two different inputs whose references differ but whose outputs are bitwise identical.
  * determinism: the kernel runs again on the same input; the largest difference between the two outputs
    is reported (a note, not a failure: split-K with atomics is legitimately nondeterministic).
  * after timing, the pipeline's re-check stage checks fresh inputs, which catches a kernel that is correct
    on its first calls and returns stale results afterwards.
Every problem kind is checked the same way: each output tensor (one per group for group_gemm) gets its own
guarded buffer, and the inputs are every tensor of the kind's input structure (`KindSpec.inputs`).
Everything works on the CPU as on the GPU. Guards cannot catch a stray write that lands beyond them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .checking import CheckResult, check_output
from .problem import GEMM, Problem, kind_spec
from .reference import Expected

# Guard size on each side of the output, in bytes: a multiple of 256 so that c keeps the allocator's alignment.
GUARD_BYTES = 64 * 1024
ALIGN_BYTES = 256
# NaNs with a payload no arithmetic produces: a kernel storing NaN (or anything) in a guard changes the bits.
GUARD_PATTERN = {
    torch.float16: 0x7E5A,
    torch.bfloat16: 0x7FDA,
    torch.float32: 0x7FC5A5A5,
}
INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

# Finding names (stable strings: they appear in results files and CI logs).
OUT_OF_BOUNDS = "out-of-bounds-write"
MODIFIES_INPUTS = "modifies-inputs"
ALIASES_INPUT = "aliases-input"
CACHED_OUTPUT = "cached-output"
NONDETERMINISTIC = "nondeterministic"
OUTPUT_IN_FLIGHT = "output-in-flight"
TAMPERED_REFERENCE = "tampered-reference"


@dataclass
class Finding:
    check: str
    detail: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.check}: {self.detail}"


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The same elements viewed as integers, so that NaN payloads and fp4/fp8 bytes compare exactly."""
    return t.view(INT_VIEW[t.element_size()])


@dataclass
class GuardedOutput:
    """A poisoned output c placed between two guard regions of one allocation."""

    buffer: torch.Tensor     # 1-D: guard | c | guard
    guard: int               # elements in each guard
    c: torch.Tensor          # [M, N, L] view of the middle

    @classmethod
    def for_problem(cls, problem: Problem) -> "GuardedOutput":
        """The guarded output of a single-output problem."""
        return cls.like(problem.c)

    @classmethod
    def like(cls, out: torch.Tensor) -> "GuardedOutput":
        """A guarded, poisoned [rows, cols, L] output laid out as `out` (a view of a contiguous (L, rows, cols))."""
        rows, cols, l = out.shape
        dtype = out.dtype
        size = torch.empty((), dtype=dtype).element_size()
        guard = GUARD_BYTES // size
        n = l * rows * cols
        # The CPU allocator aligns to 64 bytes only: over-allocate and start c on a 256-byte boundary (TMA and
        # vector stores want 16-128), as the CUDA caching allocator would place a fresh tensor.
        raw = torch.empty(guard + n + guard + ALIGN_BYTES // size, dtype=dtype, device=out.device)
        skip = (-(raw.data_ptr() + guard * size) % ALIGN_BYTES) // size
        buffer = raw[skip:skip + guard + n + guard]
        _bits(buffer).fill_(_signed(GUARD_PATTERN[dtype], size))
        buffer[guard:guard + n].fill_(float("nan"))
        c = buffer[guard:guard + n].view(l, rows, cols).permute(1, 2, 0)
        return cls(buffer, guard, c)

    def violation(self) -> str | None:
        """Where a guard was written, or None."""
        size = self.buffer.element_size()
        expected = _signed(GUARD_PATTERN[self.buffer.dtype], size)
        n = self.buffer.numel() - 2 * self.guard
        parts = []
        for side, region in (("before", self.buffer[:self.guard]), ("after", self.buffer[self.guard + n:])):
            bad = (_bits(region) != expected).nonzero().flatten()
            if bad.numel():
                # Distance from the output's edge, in elements: how far outside the kernel wrote.
                first = int(bad[-1]) if side == "before" else int(bad[0])
                dist = self.guard - first if side == "before" else first + 1
                parts.append(f"{bad.numel()} element(s) {side} the output (nearest {dist} element(s) away)")
        return "; ".join(parts) or None


def _signed(pattern: int, size: int) -> int:
    """An unsigned bit pattern as the signed integer torch's int views hold."""
    bits = 8 * size
    return pattern - (1 << bits) if pattern >= 1 << (bits - 1) else pattern


def _inputs(data, kind: str = GEMM) -> list[tuple[str, torch.Tensor]]:
    return kind_spec(kind).inputs(data)


def _tensors(out) -> list:
    """A kernel's returned value as a list (a grouped kernel returns one)."""
    return list(out) if isinstance(out, (list, tuple)) else [out]


def as_one_tensor(out) -> torch.Tensor | None:
    """A returned value as one tensor, a list's tensors flattened and joined (None if any entry is not one)."""
    parts = _tensors(out)
    if not parts or not all(isinstance(t, torch.Tensor) for t in parts):
        return None
    if len(parts) == 1 and not isinstance(out, (list, tuple)):
        return parts[0]
    if len({(t.dtype, t.device) for t in parts}) != 1:
        return None
    return torch.cat([t.detach().reshape(-1) for t in parts])


def copy_of(out):
    """A copy of a returned value's tensors (a list's too), taken on the current stream: what it held then."""
    if isinstance(out, (list, tuple)):
        return [copy_of(t) for t in out]
    return out.detach().clone() if isinstance(out, torch.Tensor) else None


def changed_since(copy, out) -> int:
    """Elements of the returned value whose bits differ from `copy` (taken earlier by `copy_of`)."""
    if isinstance(out, (list, tuple)):
        return sum(changed_since(c, t) for c, t in zip(copy, out))
    if not isinstance(out, torch.Tensor) or copy is None or copy.shape != out.shape:
        return 0
    return int((_bits(copy) != _bits(out.detach())).sum())


def in_flight_finding(copy, out, where: str = "the call") -> Finding | None:
    """A finding when the returned value changed after `where` returned (the copy was taken then)."""
    n = changed_since(copy, out)
    if not n:
        return None
    return Finding(OUTPUT_IN_FLIGHT, f"{n} output element(s) changed after {where} returned (work still in flight "
                                     f"on another stream, or deferred)")


def _digest(t: torch.Tensor) -> tuple[int, int]:
    bits = _bits(t.detach().contiguous())
    return int(bits.to(torch.int64).sum()), int((~torch.isfinite(t)).sum())


@dataclass
class Seal:
    """A reference with a digest of its values and allowance taken when it was computed, so that a kernel
    that writes into it (found through the garbage collector, say) is seen. The fp32 reference of finite
    inputs is finite: a NaN or infinity in it is tampering too."""

    expected: Expected
    digest: tuple = ()
    what: str = "a reference"

    @classmethod
    def of(cls, expected: Expected, what: str = "a reference") -> "Seal":
        return cls(expected, cls._digests(expected), what)

    @staticmethod
    def _digests(expected: Expected) -> tuple:
        parts = []
        for field_ in (expected.values, expected.allowance):
            parts += [_digest(t) for t in (field_ if isinstance(field_, (list, tuple)) else [field_])]
        return tuple(parts)

    def broken(self) -> Finding | None:
        now = self._digests(self.expected)
        if now == self.digest:
            values = self.expected.values
            bad = sum(int((~torch.isfinite(t)).sum()) for t in (values if isinstance(values, list) else [values]))
            if not bad:
                return None
        return Finding(TAMPERED_REFERENCE, f"{self.what} the harness held during the call was written into "
                                           f"(NaN or other values in the expected output)")


def snapshot_inputs(data, kind: str = GEMM) -> list[tuple[str, torch.Tensor]]:
    return [(name, t.detach().clone()) for name, t in _inputs(data, kind)]


def modified_inputs(data, snapshot: list[tuple[str, torch.Tensor]], kind: str = GEMM) -> list[str]:
    """Names of the inputs whose bits differ from the snapshot, with how many elements changed."""
    changed = []
    for (name, t), (_, before) in zip(_inputs(data, kind), snapshot):
        n = int((_bits(t) != _bits(before)).sum())
        if n:
            changed.append(f"{name} ({n} element(s))")
    return changed


def _storage_range(t: torch.Tensor) -> tuple[torch.device, int, int]:
    storage = t.untyped_storage()
    return t.device, storage.data_ptr(), storage.data_ptr() + storage.nbytes()


def aliased_inputs(out, data, kind: str = GEMM) -> list[str]:
    """Names of the inputs whose memory the returned tensor (any of a returned list) shares."""
    hits = []
    for o in _tensors(out):
        if not isinstance(o, torch.Tensor) or o.numel() == 0:
            continue
        dev, lo, hi = _storage_range(o)
        for name, t in _inputs(data, kind):
            tdev, tlo, thi = _storage_range(t)
            if tdev == dev and lo < thi and tlo < hi and name not in hits:
                hits.append(name)
    return hits


@dataclass
class CheckedRun:
    """One guarded correctness call: the check, the integrity findings, and a copy of the output."""

    check: CheckResult
    findings: list[Finding] = field(default_factory=list)
    output: torch.Tensor | None = None   # a copy of what the kernel returned (a list's tensors joined in one)
    expected: Expected | None = None     # the reference it was checked against

    @property
    def fatal(self) -> Finding | None:
        return next((f for f in self.findings if f.fatal), None)

    @property
    def passed(self) -> bool:
        return self.check.passed and self.fatal is None

    def reason(self) -> str | None:
        fatal = self.fatal
        if fatal is not None:
            return str(fatal)
        return None if self.check.passed else self.check.reason

    def to_check_result(self) -> CheckResult:
        """The check with a fatal finding folded in (it fails the check and becomes its reason)."""
        if self.check.passed and self.fatal is None:
            return self.check
        return replace(self.check, passed=False, reason=self.reason())


def checked_run(fn, problem: Problem, expected, synchronize, held: tuple[Seal, ...] = ()) -> CheckedRun:
    """Run `fn` once on `problem` with a poisoned, guarded output, and check everything listed above.

    `expected` is the [M, N, L] reference with its allowance, or a function computing it (called after the
    call returned); `synchronize()` waits for the whole device; `held` are the references the caller holds
    while `fn` runs. Exceptions from `fn` propagate.
    """
    kind = problem.kind
    guards = [GuardedOutput.like(c) for c in problem.spec.outputs(problem.data)]
    data = problem.with_outputs([g.c for g in guards]).data
    before = snapshot_inputs(data, kind)
    out = fn(data)
    at_return = copy_of(out)
    synchronize()
    findings = [f for f in (seal.broken() for seal in held) if f is not None]
    in_flight = in_flight_finding(at_return, out)
    if in_flight:
        findings.append(in_flight)
    if callable(expected):
        expected = expected()
    aliased = aliased_inputs(out, data, kind)
    if aliased:
        findings.append(Finding(ALIASES_INPUT, f"returned tensor shares memory with input {', '.join(aliased)}"))
    changed = modified_inputs(data, before, kind)
    if changed:
        findings.append(Finding(MODIFIES_INPUTS, f"kernel changed its input {', '.join(changed)}"))
    outside = [(g, v) for g, v in enumerate(guard.violation() for guard in guards) if v]
    if outside:
        where = "; ".join(v if len(guards) == 1 else f"group {g}: {v}" for g, v in outside)
        findings.append(Finding(OUT_OF_BOUNDS, f"kernel wrote outside its output: {where}"))
    check = check_output(out, expected.values, problem.fmt.out_dtype, allowance=expected.allowance)
    joined = as_one_tensor(out)
    copy = None if joined is None else joined.detach().clone()
    return CheckedRun(check, findings, copy, expected)


def cached_output(earlier: CheckedRun, later: CheckedRun, ref_earlier, ref_later) -> Finding | None:
    """A finding when two different problems got bitwise-identical outputs although their references differ
    (a grouped problem's references are lists)."""
    a, b = earlier.output, later.output
    ref_earlier, ref_later = as_one_tensor(ref_earlier), as_one_tensor(ref_later)
    if ref_earlier is None or ref_later is None or ref_earlier.shape != ref_later.shape:
        return None
    if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return None
    if not torch.equal(_bits(a), _bits(b)):
        return None
    out_dtype = a.dtype
    if torch.equal(_bits(ref_earlier.to(out_dtype)), _bits(ref_later.to(out_dtype))):
        return None
    return Finding(CACHED_OUTPUT, "returns the same output for different inputs (a cached result)")


def run_to_run_difference(first: torch.Tensor, second: torch.Tensor) -> tuple[float, int]:
    """(largest absolute difference, number of elements whose bits differ) between two outputs."""
    differs = _bits(first) != _bits(second)
    n = int(differs.sum())
    if n == 0:
        return 0.0, 0
    a, b = first.to(torch.float64), second.to(torch.float64)
    both_finite = torch.isfinite(a) & torch.isfinite(b)
    diff = torch.where(both_finite, (a - b).abs(), torch.zeros_like(a))
    # A difference in NaN/inf placement counts as infinitely different.
    worst = float("inf") if bool((differs & ~both_finite).any()) else float(diff.max())
    return worst, n


def nondeterminism_finding(first: torch.Tensor, second: torch.Tensor) -> tuple[float, Finding | None]:
    worst, n = run_to_run_difference(first, second)
    if n == 0:
        return 0.0, None
    return worst, Finding(NONDETERMINISTIC, f"{n} element(s) differ between two runs on the same input "
                                            f"(max abs diff {worst:.3g})", fatal=False)
