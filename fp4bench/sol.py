"""Speed of light (SOL) of a problem from measured ceilings, never from datasheets.

SOL time = max(FLOPs / matrix rate of the kernel's math path, bytes / copy bandwidth), where
- FLOPs = 2·M·N·K·L per GEMM of the problem kind (`KindSpec.flops`: a dual GEMM is two GEMMs, a grouped
  case the sum over its groups, a GEMV N = 1) and bytes = `problem.min_bytes(shape, fmt, kind)` (A, every B,
  their scale tensors, C; GEMV's vector is its one row, not the competition's 128-row padding);
- the math path is the tensor-core input type a kernel multiplies in: `Kernel.math_path`, or, when a kernel
  declares none, the format's exact dense dtype (`GemmFormat.compute_dtype`: fp16 or bf16);
- the rates come from `fp4bench device --measure` (`Ceilings`). fp16 and bf16 run at the same tensor-core
  rate on every NVIDIA GPU with both, so the measured bf16 rate serves the fp16 path. A path with no
  measured rate (fp4 on a GPU without FP4 tensor cores, fp32) has no SOL: reports show '-'.

The speed-of-light guard (`physical_floor`, `below_floor`): a timed median under FLOOR_FRACTION of the case's
physical floor is no result (a cached or skipped computation; one such shape collapses a geometric mean),
and the case fails with the ratio. The floor is the larger of the bytes over the copy bandwidth (with a cold
L2 only: a warm L2 legitimately beats it) and the FLOPs over the measured rate of the kernel's declared math
path, or of the fastest measured path when it declares none (a submission: its path is unknown).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .formats import GemmFormat
from .problem import GEMM, Shape, kind_spec, min_bytes

MATH_PATHS = ("fp4", "fp8", "fp16", "bf16", "fp32")
# Which measured rate bounds each math path.
RATE_FOR_PATH = {"fp4": "fp4", "fp8": "fp8", "fp16": "bf16", "bf16": "bf16"}
PATH_FOR_DTYPE_NAME = {"torch.float16": "fp16", "torch.bfloat16": "bf16"}
# The measured ceilings are what a tuned library reaches (on an H200 about 80-90% of the datasheet copy and
# bf16 rates, less for fp8), so an honest kernel stays well above half the floor they define.
FLOOR_FRACTION = 0.5
BELOW_PHYSICAL_FLOOR = "below-physical-floor"


@dataclass(frozen=True)
class Ceilings:
    """Measured rates of one GPU: copy bandwidth in bytes/s (read + written), matrix rates in FLOP/s."""

    copy_bytes_per_s: float
    matrix_flops_per_s: dict[str, float] = field(default_factory=dict)   # "bf16", "fp8", maybe "fp4"
    measured_at: str = ""
    gpu: str = ""

    def rate_for(self, path: str) -> float | None:
        key = RATE_FOR_PATH.get(path)
        return None if key is None else self.matrix_flops_per_s.get(key)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Ceilings":
        return cls(float(d["copy_bytes_per_s"]), {k: float(v) for k, v in d.get("matrix_flops_per_s", {}).items()},
                   d.get("measured_at", ""), d.get("gpu", ""))


def math_path_of(kernel, fmt: GemmFormat) -> str:
    """The kernel's declared math path, else the format's exact dense dtype."""
    declared = getattr(kernel, "math_path", None)
    if declared is not None:
        if declared not in MATH_PATHS:
            raise ValueError(f"kernel {kernel.name}: unknown math_path {declared!r}; known: {', '.join(MATH_PATHS)}")
        return declared
    return PATH_FOR_DTYPE_NAME[str(fmt.compute_dtype)]


@dataclass(frozen=True)
class SolEstimate:
    flops: int
    bytes: int
    math_path: str
    compute_s: float | None     # FLOPs over the path's rate; None when the rate is unknown
    memory_s: float | None      # bytes over the copy bandwidth

    @property
    def seconds(self) -> float | None:
        """The SOL time; None unless both bounds are known (a partial bound would overstate % of SOL)."""
        if self.compute_s is None or self.memory_s is None:
            return None
        return max(self.compute_s, self.memory_s)

    @property
    def bound(self) -> str | None:
        if self.seconds is None:
            return None
        return "compute" if self.compute_s >= self.memory_s else "memory"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"], d["bound"] = self.seconds, self.bound
        return d


def estimate(shape: Shape, fmt: GemmFormat, math_path: str, ceilings: Ceilings | None,
             kind: str = GEMM) -> SolEstimate:
    flops, nbytes = kind_spec(kind).flops(shape), min_bytes(shape, fmt, kind)
    if ceilings is None:
        return SolEstimate(flops, nbytes, math_path, None, None)
    rate = ceilings.rate_for(math_path)
    compute_s = flops / rate if rate else None
    memory_s = nbytes / ceilings.copy_bytes_per_s if ceilings.copy_bytes_per_s else None
    return SolEstimate(flops, nbytes, math_path, compute_s, memory_s)


def achieved(flops: int, nbytes: int, seconds: float, sol_s: float | None) -> dict:
    """TFLOP/s, GB/s and % of SOL of a measured time."""
    if seconds <= 0:
        raise ValueError("a measured time must be positive")
    return {"tflops": flops / seconds / 1e12, "gbps": nbytes / seconds / 1e9,
            "pct_sol": None if sol_s is None else 100.0 * sol_s / seconds}


@dataclass(frozen=True)
class Floor:
    """A case's physical floor: seconds, and what bounds it (for the failure's reason)."""

    seconds: float
    why: str


def physical_floor(shape: Shape, fmt: GemmFormat, math_path: str | None, ceilings: Ceilings | None,
                   kind: str = GEMM, cold_l2: bool = True) -> Floor | None:
    """The floor of the speed-of-light guard (module docstring); None without ceilings."""
    if ceilings is None:
        return None
    flops, nbytes = kind_spec(kind).flops(shape), min_bytes(shape, fmt, kind)
    bounds = []
    if cold_l2 and ceilings.copy_bytes_per_s:
        bw = ceilings.copy_bytes_per_s
        bounds.append(Floor(nbytes / bw, f"{nbytes / 1e6:.3g} MB at the copy bandwidth {bw / 1e12:.3g} TB/s"))
    rates = ceilings.matrix_flops_per_s
    if math_path is not None:
        rate, label = ceilings.rate_for(math_path), math_path
    else:
        label = max(rates, key=rates.get) if rates else None
        rate = rates.get(label) if label else None
    if rate:
        bounds.append(Floor(flops / rate, f"{flops / 1e9:.3g} GFLOP at the {label} rate {rate / 1e12:.0f} TFLOP/s"))
    return max(bounds, key=lambda b: b.seconds) if bounds else None


def below_floor(median_s: float, floor: Floor | None) -> str | None:
    """The guard's finding (one line) when a median is under FLOOR_FRACTION of the floor, else None."""
    if floor is None or median_s >= FLOOR_FRACTION * floor.seconds:
        return None
    return (f"{BELOW_PHYSICAL_FLOOR}: median {median_s * 1e6:.3g} us is {median_s / floor.seconds:.2g}x the "
            f"physical floor {floor.seconds * 1e6:.3g} us ({floor.why})")
