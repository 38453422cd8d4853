"""What one case is and what it produced: `CaseSpec` in, `CaseRecord` out, `CaseStatus` in between.

A case is one (kernel, problem kind, format, shape with seed) on one device. Its identity is `CaseRecord.key`
(and `CaseSpec.key`, the same tuple): the kernel as the results name it (a submission file by its stem),
the problem kind, the format and (M, N, K, L, seed); a grouped case's M, N and K are tuples with one entry per
group (in JSON, lists), so its key stays hashable. Every place that asks "the same case?" (resume, report,
compare, merge) uses this key and nothing else; `hashable_key` turns a key read back from JSON into one.

`CaseRecord.to_dict()` is the JSON form of a case in a results document (schema in fp4bench.results).
"""

from __future__ import annotations

import enum
import traceback
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from .problem import GEMM, Shape


class CaseStatus(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    SKIP = "skip"

    @property
    def failing(self) -> bool:
        return self in (CaseStatus.FAIL, CaseStatus.ERROR)

    def __str__(self) -> str:
        return self.value


def kernel_label(ref: str) -> str:
    """A kernel reference as results name it: a registered name as is, a submission file by its stem."""
    return Path(ref).stem if ref.endswith(".py") else ref


def shape_dict(shape: Shape) -> dict:
    return asdict(shape)


def _size(v):
    """A size of a shape's JSON form: an integer, or a grouped case's list of them."""
    return tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else int(v)


def shape_from_dict(d: dict) -> Shape:
    return Shape(_size(d["m"]), _size(d["n"]), _size(d["k"]), int(d.get("l", 1)), int(d.get("seed", Shape.seed)))


def hashable_key(key) -> tuple:
    """A case key read from JSON (lists, a grouped case's nested lists) as the tuple `case_key` makes."""
    return tuple(tuple(x) if isinstance(x, list) else x for x in key)


def case_key(kernel: str, problem: str, fmt: str, shape: Shape) -> tuple:
    s = shape
    return (kernel_label(kernel), problem, fmt, s.m, s.n, s.k, s.l, s.seed)


def one_line(exc: BaseException) -> str:
    """An exception as one line, with the innermost frame that raised it."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {msg}{where}"


@dataclass(frozen=True)
class CaseSpec:
    """Everything a worker needs to run one case (picklable; no tensors)."""

    kernel: str                    # a registered name or a submission file path
    format: str
    shape: Shape
    problem: str = GEMM
    device: str = "cpu"
    gpu: int = 0                   # the index this process sees
    gpu_physical: int | None = None
    l2_bytes: int = 0
    ceilings: dict | None = None
    timing: "object | None" = None   # fp4bench.timing.TimingOptions; None: check only (verify)
    check_seeds: int = 2
    tune: bool = False             # time the kernel's candidate configurations first (run --tune)
    strict_submission: bool = True   # a submission file's imports and first call are checked (fp4bench.strict)

    @property
    def key(self) -> tuple:
        return case_key(self.kernel, self.problem, self.format, self.shape)


@dataclass(frozen=True)
class CaseRecord:
    kernel: str
    format: str
    shape: Shape
    status: CaseStatus
    problem: str = GEMM
    role: str | None = None
    reason: str | None = None
    gpu: int | None = None
    check: dict | None = None          # fp4bench.checking.CheckResult.to_dict of the worst checked input
    findings: tuple[str, ...] = ()     # integrity findings and notes, one line each
    config: dict | None = None         # the launch configuration the kernel ran with (Kernel.launch_config)
    tuning: tuple[dict, ...] | None = None   # candidates' times when tuning ran: {config, median_us, rse}
    timing: dict | None = None         # fp4bench.timing.Measurement.to_dict; only for passed, timed cases
    sol: dict | None = None            # fp4bench.sol.SolEstimate.to_dict
    metrics: dict | None = None        # tflops, gbps, pct_sol
    notes: tuple[str, ...] = ()
    seconds: float | None = None
    sanitizer: tuple[dict, ...] | None = None   # verify --sanitize: one fp4bench.sanitize.PassResult per tool

    @property
    def key(self) -> tuple:
        return case_key(self.kernel, self.problem, self.format, self.shape)

    @property
    def median_s(self) -> float | None:
        return self.timing["stats"]["median"] if self.timing else None

    @property
    def converged(self) -> bool | None:
        """Whether the stopping rule reached its noise target (None when untimed)."""
        return None if not self.timing else bool(self.timing.get("converged", True))

    def but(self, **changes) -> "CaseRecord":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["shape"] = shape_dict(self.shape)
        d["status"] = self.status.value
        d["findings"] = list(self.findings)
        d["notes"] = list(self.notes)
        d["tuning"] = None if self.tuning is None else [dict(t) for t in self.tuning]
        if self.sanitizer is None:
            del d["sanitizer"]   # only verify --sanitize writes it: other documents stay as they were
        else:
            d["sanitizer"] = [dict(p) for p in self.sanitizer]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CaseRecord":
        """A record from its JSON form (current schema); unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown case field(s) {', '.join(sorted(unknown))}")
        values = dict(d)
        values["shape"] = shape_from_dict(d["shape"])
        values["status"] = CaseStatus(d["status"])
        values["findings"] = tuple(d.get("findings") or ())
        values["notes"] = tuple(d.get("notes") or ())
        if d.get("tuning") is not None:
            values["tuning"] = tuple(d["tuning"])
        if d.get("sanitizer") is not None:
            values["sanitizer"] = tuple(d["sanitizer"])
        return cls(**values)

    @classmethod
    def ended(cls, spec: CaseSpec, status: CaseStatus, reason: str | None, **more) -> "CaseRecord":
        """The record of a case that ended before producing anything else (crash, timeout, skip...)."""
        return cls(kernel=kernel_label(spec.kernel), format=spec.format, shape=spec.shape, status=status,
                   problem=spec.problem, gpu=spec.gpu_physical, reason=reason, **more)


@dataclass
class CaseCounts:
    """How many cases ended in each status; the summary line of run and verify."""

    counts: dict = field(default_factory=lambda: {s: 0 for s in CaseStatus})

    @classmethod
    def of(cls, records) -> "CaseCounts":
        c = cls()
        for r in records:
            c.counts[r.status] += 1
        return c

    @property
    def checked(self) -> int:
        return self.counts[CaseStatus.PASS] + self.counts[CaseStatus.FAIL] + self.counts[CaseStatus.ERROR]

    @property
    def failing(self) -> int:
        return self.counts[CaseStatus.FAIL] + self.counts[CaseStatus.ERROR]

    def summary(self) -> str:
        c = self.counts
        return (f"{c[CaseStatus.PASS]} passed, {c[CaseStatus.FAIL]} failed, {c[CaseStatus.ERROR]} errors, "
                f"{c[CaseStatus.SKIP]} skipped")
