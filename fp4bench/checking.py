"""Output checking against the exact reference.

A kernel's output passes when it has the expected shape and dtype, and every element satisfies
    |out - ref| <= atol + rtol * |ref|
with NaN and infinities agreeing in position (and sign). The reference is rounded to the output dtype
first. Default tolerances: rtol = atol = 1e-3 for fp16 output (the competition's); bf16 keeps only 8
significant bits, one unit in the last place is 2^-7 relative, so bf16 output uses rtol = atol = 1e-2.
A NaN where the reference is finite always fails: outputs are poisoned with NaN before a kernel runs.
On the competition's data this is the competition's own check (rtol = atol = 1e-3, NaN and +-inf agreeing),
computed exactly in float64 where the competition subtracts in fp16. The case pipeline adds a per-element fp32
accumulation-order allowance (see `fp4bench.reference`), zero wherever exact fp32 accumulation is guaranteed,
which the competition's GEMM, GEMV and grouped GEMM data always are; it matters only where large products cancel.
A grouped problem's output is a list: it must have one tensor per group, each checked as above, and the
result counts the mismatches of all of them (indices are (group, row, column, batch)).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

DEFAULT_TOLERANCES = {
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1e-2, 1e-2),
    torch.float32: (1e-5, 1e-5),
}
MAX_REPORTED_MISMATCHES = 5


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float

    @classmethod
    def for_dtype(cls, dtype: torch.dtype) -> "Tolerance":
        rtol, atol = DEFAULT_TOLERANCES.get(dtype, (1e-3, 1e-3))
        return cls(rtol, atol)


@dataclass
class CheckResult:
    passed: bool
    reason: str | None = None
    max_abs_err: float = float("nan")
    max_rel_err: float = float("nan")
    mismatches: int = 0
    total: int = 0
    first_mismatches: list[dict] = field(default_factory=list)
    rtol: float = 0.0
    atol: float = 0.0

    def summary(self) -> str:
        if self.passed:
            return f"max abs {self.max_abs_err:.3g}, max rel {self.max_rel_err:.3g}"
        return self.reason or "failed"

    def to_dict(self) -> dict:
        return asdict(self)


def check_output(out, ref, out_dtype: torch.dtype, tolerance: Tolerance | None = None,
                 allowance=None) -> CheckResult:
    """Compare a kernel's returned value with the reference (already [M, N, L], any float dtype; a list of
    them for a grouped problem, whose kernel returns a list).

    `allowance` (same structure, >= 0) widens each element's bound by the fp32 accumulation-order allowance of
    `fp4bench.reference.expected_output`.
    """
    if isinstance(ref, (list, tuple)):
        return _check_groups(out, list(ref), out_dtype, tolerance, allowance)
    tol = tolerance or Tolerance.for_dtype(out_dtype)
    base = dict(rtol=tol.rtol, atol=tol.atol, total=ref.numel())
    if not isinstance(out, torch.Tensor):
        return CheckResult(False, f"kernel returned {type(out).__name__}, not a tensor", **base)
    if tuple(out.shape) != tuple(ref.shape):
        return CheckResult(False, f"wrong shape {tuple(out.shape)}, expected {tuple(ref.shape)}", **base)
    if out.dtype != out_dtype:
        return CheckResult(False, f"wrong dtype {out.dtype}, expected {out_dtype}", **base)

    expected = ref.to(out_dtype).to(torch.float64)
    got = out.detach().to(device=ref.device, dtype=torch.float64)
    nan_e, nan_g = torch.isnan(expected), torch.isnan(got)
    inf_e, inf_g = torch.isinf(expected), torch.isinf(got)
    finite = ~(nan_e | inf_e) & ~(nan_g | inf_g)
    diff = torch.where(finite, (got - expected).abs(), torch.zeros_like(got))
    allowed = tol.atol + tol.rtol * expected.abs()
    if allowance is not None:
        allowed = allowed + allowance.to(device=ref.device, dtype=torch.float64)
    bad = (finite & (diff > allowed)) | (nan_e != nan_g) | (inf_e != inf_g)
    bad |= inf_e & inf_g & (torch.sign(got) != torch.sign(expected))

    rel = torch.where(finite, diff / expected.abs().clamp_min(tol.atol), torch.zeros_like(diff))
    max_abs = float(diff.max()) if diff.numel() else 0.0
    max_rel = float(rel.max()) if rel.numel() else 0.0
    n_bad = int(bad.sum())
    if n_bad == 0:
        return CheckResult(True, None, max_abs, max_rel, 0, **base)

    idx = bad.nonzero()[:MAX_REPORTED_MISMATCHES].tolist()
    first = [{"index": i, "got": float(got[tuple(i)]), "expected": float(expected[tuple(i)])} for i in idx]
    unwritten = int((nan_g & ~nan_e).sum())
    what = f"{n_bad} of {ref.numel()} elements mismatch"
    if unwritten:
        what += f" ({unwritten} NaN: unwritten or invalid)"
    where = ", ".join(f"{tuple(f['index'])}: got {f['got']:.6g} expected {f['expected']:.6g}" for f in first[:3])
    return CheckResult(False, f"{what}; first at {where}", max_abs, max_rel, n_bad, first_mismatches=first, **base)


def _check_groups(out, refs: list, out_dtype: torch.dtype, tolerance: Tolerance | None, allowance) -> CheckResult:
    """check_output of each group's tensor, merged: mismatches summed, the first ones indexed by group."""
    tol = tolerance or Tolerance.for_dtype(out_dtype)
    base = dict(rtol=tol.rtol, atol=tol.atol, total=sum(r.numel() for r in refs))
    if not isinstance(out, (list, tuple)):
        return CheckResult(False, f"kernel returned {type(out).__name__}, not a list of {len(refs)} tensors "
                                  f"(one per group)", **base)
    if len(out) != len(refs):
        return CheckResult(False, f"kernel returned {len(out)} outputs for {len(refs)} groups", **base)
    allowances = allowance if allowance is not None else [None] * len(refs)
    results = [check_output(o, r, out_dtype, tol, a) for o, r, a in zip(out, refs, allowances)]
    max_abs = max((r.max_abs_err for r in results), default=0.0)
    max_rel = max((r.max_rel_err for r in results), default=0.0)
    failed = [(g, r) for g, r in enumerate(results) if not r.passed]
    if not failed:
        return CheckResult(True, None, max_abs, max_rel, 0, **base)
    first = [{**f, "index": [g, *f["index"]]} for g, r in failed for f in r.first_mismatches]
    first = first[:MAX_REPORTED_MISMATCHES]
    n_bad = sum(r.mismatches for _, r in failed)
    why = "; ".join(f"group {g}: {r.reason}" for g, r in failed[:2])
    more = f" (and {len(failed) - 2} more groups)" if len(failed) > 2 else ""
    return CheckResult(False, f"{len(failed)} of {len(refs)} groups fail: {why}{more}", max_abs, max_rel, n_bad,
                       first_mismatches=first, **base)
