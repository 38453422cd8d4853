"""Problem shapes and input generation, matching the public NVFP4 GEMM competition's harness.

`generate(shape, fmt, device)` returns a `Problem` whose `data` is the competition's tuple
    (a, b, sfa, sfb, sfa_permuted, sfb_permuted, c)
  a  [M, K // 2, L] float4_e2m1fn_x2, K-major (a view of a contiguous (L, M, K // 2) tensor)
  b  [N, K // 2, L] likewise
  sfa, sfb  [MN, K // block, L] scale dtype (row-major per batch, on the problem's device)
  sfa_permuted, sfb_permuted  the same scales as (32, 4, rest_mn, 4, rest_k, L) views of the blocked layout
  c  [M, N, L] output dtype, pre-filled with random values
NVFP4 problems (format "nvfp4") are the competition's own inputs, byte for byte, random stream included
(fp4bench.competition): element bytes uniform over all 256 patterns, scales the integers 0..3 (zero scales
occur). Other formats follow the same layout with their own draws (NVFP4 scales 0..3 for nvfp4-bf16). MX scales are exponents drawn from 2^-3..2^3; MXFP8 elements are uniform
over the non-NaN e4m3 bytes. A dense bf16 operand (W4A16) is standard normal and has no scale tensors
(None in their slots). Same seed, same device -> same data.

A `Problem` is what a kernel is handed: the problem kind (today "gemm", the competition's nvfp4_gemm
semantics generalised to every format), its format from the registry, its shape and the input tuple.
Kernels read format facts from `problem.fmt` and sizes from `problem.shape`, never from tensor dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .formats import E8M0_BIAS, GemmFormat, OperandFormat
from .layouts import to_competition

# MX scale exponents are drawn from this range: wide enough to exercise the exponent path, narrow
# enough that fp32 sums of random data stay far from overflow.
MX_SCALE_EXPONENTS = (-3, 3)
NVFP4_SCALE_VALUES = (0, 3)
# The competition's harness advances the seed by this much for each further input of a case.
SEED_STRIDE = 42
# The format whose inputs are the NVFP4 GEMM competition's, byte for byte (fp4bench.competition).
COMPETITION_FORMAT = "nvfp4"
# Problem kinds a kernel may declare (`Kernel.problems`).
GEMM = "gemm"
GEMV = "gemv"
DUAL_GEMM = "dual_gemm"
GROUP_GEMM = "group_gemm"
PROBLEM_KINDS = (GEMM, GEMV, DUAL_GEMM, GROUP_GEMM)


@dataclass(frozen=True, order=True)
class Shape:
    m: int
    n: int
    k: int
    l: int = 1
    seed: int = 1111

    def __str__(self) -> str:
        s = f"{self.m}x{self.n}x{self.k}"
        return s if self.l == 1 else f"{s}x{self.l}"

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k * self.l

    def with_seed(self, seed: int) -> "Shape":
        return Shape(self.m, self.n, self.k, self.l, seed)

    def seeds(self, count: int, start: int = 0) -> list[int]:
        """Seeds of inputs start .. start + count - 1 of this case (the competition's stride)."""
        return [self.seed + SEED_STRIDE * i for i in range(start, start + count)]


def min_bytes(shape: Shape, fmt: GemmFormat) -> int:
    """Bytes a kernel must move at least: A, B and their scales read once, C written once."""
    out_bytes = shape.m * shape.n * shape.l * torch.empty((), dtype=fmt.out_dtype).element_size()
    return (fmt.a.bytes_for(shape.m, shape.k) + fmt.b.bytes_for(shape.n, shape.k)) * shape.l + out_bytes


@dataclass
class Problem:
    """One problem instance: kind, format, shape and the competition-style input tuple `data`."""

    shape: Shape
    fmt: GemmFormat
    data: tuple
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    kind: str = GEMM

    @property
    def a(self):
        return self.data[0]

    @property
    def b(self):
        return self.data[1]

    @property
    def sfa(self):
        return self.data[2]

    @property
    def sfb(self):
        return self.data[3]

    @property
    def c(self):
        return self.data[6]

    def with_c(self, c: torch.Tensor) -> "Problem":
        return Problem(self.shape, self.fmt, self.data[:6] + (c,), self.device, self.kind)


def _random_elements(fmt: OperandFormat, rows: int, k: int, l: int, device) -> torch.Tensor:
    """[rows, storage_cols, L] view of a contiguous (L, rows, storage_cols) tensor."""
    cols = fmt.storage_cols(k)
    if fmt.element.name == "e2m1":
        raw = torch.randint(-128, 128, (l, rows, cols), dtype=torch.int8, device=device)
        t = raw.view(torch.float4_e2m1fn_x2)
    elif fmt.element.name == "e4m3":
        raw = torch.randint(0, 256, (l, rows, cols), dtype=torch.int16, device=device).to(torch.uint8)
        # 0x7F and 0xFF are e4m3fn's NaNs: move them to the neighbouring finite codes.
        raw = torch.where((raw & 0x7F) == 0x7F, raw - 1, raw)
        t = raw.view(torch.float8_e4m3fn)
    else:
        t = torch.randn((l, rows, cols), device=device).to(fmt.element.storage_dtype)
    return t.permute(1, 2, 0)


def _random_scales(fmt: OperandFormat, rows: int, k: int, l: int, device) -> torch.Tensor | None:
    """[rows, K // block, L] view of a contiguous (L, rows, K // block) tensor."""
    if not fmt.block_scaled:
        return None
    shape = (l, rows, fmt.scale_cols(k))
    if fmt.scale.power_of_two:
        lo, hi = MX_SCALE_EXPONENTS
        codes = torch.randint(lo + E8M0_BIAS, hi + E8M0_BIAS + 1, shape, dtype=torch.int16, device=device)
        t = codes.to(torch.uint8).view(fmt.scale.dtype)
    else:
        lo, hi = NVFP4_SCALE_VALUES
        t = torch.randint(lo, hi + 1, shape, dtype=torch.int8, device=device).to(fmt.scale.dtype)
    return t.permute(1, 2, 0)


def assemble(shape: Shape, fmt: GemmFormat, a, b, sfa, sfb, c, device) -> Problem:
    """Build a Problem from operand tensors in the competition's [rows, cols, L] views."""
    sfa_perm = None if sfa is None else to_competition(sfa)
    sfb_perm = None if sfb is None else to_competition(sfb)
    return Problem(shape, fmt, (a, b, sfa, sfb, sfa_perm, sfb_perm, c), torch.device(device))


def validate_shape(shape: Shape, fmt: GemmFormat) -> str | None:
    """Why this shape is not a legal problem of this format, or None."""
    for name in ("m", "n", "k", "l"):
        v = getattr(shape, name)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            return f"{name} must be a positive integer, got {v!r}"
    if shape.k % fmt.k_multiple:
        return f"K={shape.k} is not a multiple of {fmt.k_multiple} (the {fmt.name} block size)"
    return None


def generate(shape: Shape, fmt: GemmFormat, device: str | torch.device = "cpu") -> Problem:
    """Random problem of `fmt` at `shape`, drawn with torch.manual_seed(shape.seed) on `device`."""
    reason = validate_shape(shape, fmt)
    if reason:
        raise ValueError(reason)
    device = torch.device(device)
    m, n, k, l = shape.m, shape.n, shape.k, shape.l
    if fmt.name == COMPETITION_FORMAT:
        from .competition import generate_input

        data = generate_input("nvfp4_gemm", device=device, m=m, n=n, k=k, l=l, seed=shape.seed)
        return Problem(shape, fmt, data, device)
    torch.manual_seed(shape.seed)
    a = _random_elements(fmt.a, m, k, l, device)
    b = _random_elements(fmt.b, n, k, l, device)
    c = torch.randn((l, m, n), device=device).to(fmt.out_dtype).permute(1, 2, 0)
    sfa = _random_scales(fmt.a, m, k, l, device)
    sfb = _random_scales(fmt.b, n, k, l, device)
    return assemble(shape, fmt, a, b, sfa, sfb, c, device)


def poison_output(problem: Problem) -> Problem:
    """The same problem with c filled with NaN, so that any element a kernel leaves unwritten fails."""
    c = torch.full((problem.shape.l, problem.shape.m, problem.shape.n), float("nan"),
                   dtype=problem.fmt.out_dtype, device=problem.c.device).permute(1, 2, 0)
    return problem.with_c(c)
