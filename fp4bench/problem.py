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

A `Problem` is what a kernel is handed: the problem kind, its format from the registry, its shape and the
input structure. Kernels read format facts from `problem.fmt` and sizes from `problem.shape`, never from
tensor dtypes.

Problem kinds (`PROBLEM_KINDS`; `kind_spec(name)` holds what differs between them):
  gemm        C = A·Bᵀ per batch: the competition's nvfp4_gemm, generalised to every GEMM format.
  gemv        the competition's nvfp4_gemv: the 7-tuple above with b and sfb padded to 128 rows, of which
              only row 0 (the vector) counts; c is [M, 1, L]. Shape(m, 1, k, l).
  dual_gemm   the competition's nvfp4_dual_gemm: (a, b1, b2, sfa, sfb1, sfb2, sfa_perm, sfb1_perm, sfb2_perm, c),
              output silu(A·B1ᵀ)·(A·B2ᵀ), computed in fp32 and rounded to fp16 [M, N, L].
  group_gemm  the competition's nvfp4_group_gemm: ([(a, b, c)], [(sfa, sfb)], [(sfa_perm, sfb_perm)],
              [(m, n, k, 1)]); the output is the list of the groups' c. Shape(m, n, k) holds one tuple per
              size, a group's entry at its index (L = 1), so a grouped case stays one hashable Shape.
The three competition-only kinds exist in the "nvfp4" format alone; their inputs are the competition's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

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
    """M, N, K, L and the seed of one case; a grouped case holds tuples of per-group m, n and k (L = 1)."""

    m: int | tuple[int, ...]
    n: int | tuple[int, ...]
    k: int | tuple[int, ...]
    l: int = 1
    seed: int = 1111

    def __post_init__(self):
        # Lists (from YAML or JSON) become tuples, so that a grouped shape stays hashable.
        for name in ("m", "n", "k"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    @property
    def grouped(self) -> bool:
        return isinstance(self.m, tuple)

    @property
    def groups(self) -> list[tuple[int, int, int]]:
        """(m, n, k) of each GEMM of the case: one for a plain shape."""
        if self.grouped:
            return list(zip(self.m, self.n, self.k))
        return [(self.m, self.n, self.k)]

    def __str__(self) -> str:
        if self.grouped:
            return grouped_label(self)
        s = f"{self.m}x{self.n}x{self.k}"
        return s if self.l == 1 else f"{s}x{self.l}"

    @property
    def flops(self) -> int:
        """2·M·N·K·L summed over the groups: one GEMM's worth per group."""
        return sum(2 * m * n * k * self.l for m, n, k in self.groups)

    def with_seed(self, seed: int) -> "Shape":
        return Shape(self.m, self.n, self.k, self.l, seed)

    def seeds(self, count: int, start: int = 0) -> list[int]:
        """Seeds of inputs start .. start + count - 1 of this case (the competition's stride)."""
        return [self.seed + SEED_STRIDE * i for i in range(start, start + count)]


def _common(values: tuple[int, ...]) -> str:
    return str(values[0]) if len(set(values)) == 1 else "*"


def grouped_label(shape: Shape) -> str:
    """'g8 M1024 N4096 K7168': the group count, the groups' total M, and their N and K ('*' where the groups
    differ). Short enough for a table within 100 columns; the results JSON and CSV have every group's sizes."""
    return f"g{len(shape.m)} M{sum(shape.m)} N{_common(shape.n)} K{_common(shape.k)}"


def _dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def min_bytes(shape: Shape, fmt: GemmFormat, kind: str = GEMM) -> int:
    """Bytes a kernel must move at least: A, every B and their scales read once, C written once (per group)."""
    spec = kind_spec(kind)
    total = 0
    for m, n, k in shape.groups:
        total += (fmt.a.bytes_for(m, k) + spec.b_operands * fmt.b.bytes_for(n, k)) * shape.l
        total += m * n * shape.l * _dtype_bytes(fmt.out_dtype)
    return total


@dataclass
class Problem:
    """One problem instance: kind, format, shape and the competition-style input structure `data`."""

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
        """The output tensor of a single-output kind (every kind but group_gemm)."""
        if self.kind == GROUP_GEMM:
            raise AttributeError("a group_gemm problem has a list of outputs: use problem.spec.outputs(data)")
        return self.spec.outputs(self.data)[0]

    @property
    def spec(self) -> "KindSpec":
        return kind_spec(self.kind)

    def with_outputs(self, outputs: list[torch.Tensor]) -> "Problem":
        return Problem(self.shape, self.fmt, self.spec.with_outputs(self.data, outputs), self.device, self.kind)

    def with_c(self, c: torch.Tensor) -> "Problem":
        return self.with_outputs([c])


@dataclass(frozen=True)
class KindSpec:
    """What differs between problem kinds: the input structure, where the outputs sit, how many B operands.

    `competition`: the competition problem of the kind (fp4bench.competition); `formats`: the GEMM formats it
    exists in (None: every one). `output_slot`: the index of c in a tuple-shaped input (None: group_gemm,
    whose outputs are the third entry of each group's (a, b, c)). `input_names`: the names of the entries
    before c, for integrity findings."""

    name: str
    competition: str
    formats: tuple[str, ...] | None
    b_operands: int
    output_slot: int | None
    input_names: tuple[str, ...]

    def outputs(self, data) -> list[torch.Tensor]:
        if self.output_slot is None:
            return [c for _, _, c in data[0]]
        return [data[self.output_slot]]

    def with_outputs(self, data, outputs: list[torch.Tensor]):
        if self.output_slot is None:
            return ([(a, b, c) for (a, b, _), c in zip(data[0], outputs)],) + tuple(data[1:])
        (c,) = outputs
        return data[:self.output_slot] + (c,) + data[self.output_slot + 1:]

    def result(self, outputs: list[torch.Tensor]):
        """What a kernel of this kind returns, made of its output tensors: the list for group_gemm."""
        return list(outputs) if self.output_slot is None else outputs[0]

    def inputs(self, data) -> list[tuple[str, torch.Tensor]]:
        """Every input tensor with its name (outputs excluded)."""
        if self.output_slot is None:
            named = []
            for g, ((a, b, _), scales, permuted) in enumerate(zip(data[0], data[1], data[2])):
                group = zip(self.input_names, (a, b, *scales, *permuted))
                named += [(f"{name}[{g}]", t) for name, t in group]
            return named
        return [(name, t) for name, t in zip(self.input_names, data[:self.output_slot])
                if isinstance(t, torch.Tensor)]

    def operand_elements(self, shape: Shape) -> int:
        """Logical operand elements (A and every B) the reference dequantizes: GEMV's B is one row."""
        return sum((m + self.b_operands * n) * k * shape.l for m, n, k in shape.groups)

    def output_elements(self, shape: Shape) -> int:
        return sum(m * n * shape.l for m, n, _ in shape.groups)

    def flops(self, shape: Shape) -> int:
        """2·M·N·K·L per GEMM: a dual GEMM is two, a grouped case the sum over its groups."""
        return self.b_operands * shape.flops


_GEMM_INPUTS = ("a", "b", "sfa", "sfb", "sfa_permuted", "sfb_permuted")
KIND_SPECS = MappingProxyType({spec.name: spec for spec in (
    KindSpec(GEMM, "nvfp4_gemm", None, 1, 6, _GEMM_INPUTS),
    KindSpec(GEMV, "nvfp4_gemv", (COMPETITION_FORMAT,), 1, 6, _GEMM_INPUTS),
    KindSpec(DUAL_GEMM, "nvfp4_dual_gemm", (COMPETITION_FORMAT,), 2, 9,
             ("a", "b1", "b2", "sfa", "sfb1", "sfb2", "sfa_permuted", "sfb1_permuted", "sfb2_permuted")),
    KindSpec(GROUP_GEMM, "nvfp4_group_gemm", (COMPETITION_FORMAT,), 1, None, _GEMM_INPUTS),
)})
# --problem names: the competition's problem names, and the kinds' own.
PROBLEM_NAMES = MappingProxyType({**{s.competition: s.name for s in KIND_SPECS.values()},
                                  **{s.name: s.name for s in KIND_SPECS.values()}})


def kind_spec(kind: str) -> KindSpec:
    try:
        return KIND_SPECS[kind]
    except KeyError:
        raise KeyError(f"unknown problem kind {kind!r}; known: {', '.join(KIND_SPECS)}") from None


def problem_kind(name: str) -> str:
    """The kind of a --problem name ('nvfp4_gemv' or 'gemv'); KeyError naming the known ones."""
    try:
        return PROBLEM_NAMES[name.lower()]
    except KeyError:
        known = ", ".join(s.competition for s in KIND_SPECS.values())
        raise KeyError(f"unknown problem {name!r}; known: {known}") from None


def unsupported_format(kind: str, fmt: GemmFormat) -> str | None:
    """Why this kind has no problems in this format, or None."""
    spec = kind_spec(kind)
    if spec.formats is None or fmt.name in spec.formats:
        return None
    return (f"the {spec.competition} problem exists only in format {', '.join(spec.formats)}, "
            f"not {fmt.name}")


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


def validate_shape(shape: Shape, fmt: GemmFormat, kind: str = GEMM) -> str | None:
    """Why this shape is not a legal problem of this kind and format, or None."""
    reason = unsupported_format(kind, fmt)
    if reason:
        return reason
    if shape.grouped != (kind == GROUP_GEMM):
        return ("a group_gemm case has lists of per-group m, n and k" if kind == GROUP_GEMM
                else f"a {kind} case has single m, n and k, not per-group lists")
    sizes = {name: getattr(shape, name) for name in ("m", "n", "k", "l")}
    if shape.grouped:
        if not shape.m or not len(shape.m) == len(shape.n) == len(shape.k):
            return f"m, n and k need one entry per group, got {len(shape.m)}, {len(shape.n)} and {len(shape.k)}"
        if shape.l != 1:
            return f"a grouped case has L = 1, got {shape.l}"
        sizes = {f"{name}[{g}]": v for name in ("m", "n", "k") for g, v in enumerate(getattr(shape, name))}
    for name, v in sizes.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            return f"{name} must be a positive integer, got {v!r}"
    if kind == GEMV and shape.n != 1:
        return f"a GEMV case has N = 1, got {shape.n}"
    for _, _, k in shape.groups:
        if k % fmt.k_multiple:
            return f"K={k} is not a multiple of {fmt.k_multiple} (the {fmt.name} block size)"
    return None


def _competition_case(shape: Shape, kind: str) -> dict:
    """The competition's task.yml case of a shape (its keys: fp4bench.competition.CASE_KEYS)."""
    from .competition import CASE_KEYS

    values = {"m": shape.m, "n": shape.n, "k": shape.k, "l": shape.l, "seed": shape.seed}
    if shape.grouped:
        values.update(m=list(shape.m), n=list(shape.n), k=list(shape.k), g=len(shape.m))
    return {key: values[key] for key in CASE_KEYS[kind_spec(kind).competition]}


def generate(shape: Shape, fmt: GemmFormat, device: str | torch.device = "cpu", kind: str = GEMM) -> Problem:
    """Random problem of `kind` in `fmt` at `shape`, drawn with torch.manual_seed(shape.seed) on `device`."""
    reason = validate_shape(shape, fmt, kind)
    if reason:
        raise ValueError(reason)
    device = torch.device(device)
    m, n, k, l = shape.m, shape.n, shape.k, shape.l
    if fmt.name == COMPETITION_FORMAT:
        from .competition import generate_input

        data = generate_input(kind_spec(kind).competition, device=device, **_competition_case(shape, kind))
        return Problem(shape, fmt, data, device, kind)
    torch.manual_seed(shape.seed)
    a = _random_elements(fmt.a, m, k, l, device)
    b = _random_elements(fmt.b, n, k, l, device)
    c = torch.randn((l, m, n), device=device).to(fmt.out_dtype).permute(1, 2, 0)
    sfa = _random_scales(fmt.a, m, k, l, device)
    sfb = _random_scales(fmt.b, n, k, l, device)
    return assemble(shape, fmt, a, b, sfa, sfb, c, device)


def empty_like_output(c: torch.Tensor) -> torch.Tensor:
    """A NaN-filled tensor laid out as the competition's outputs: [rows, cols, L] of a contiguous (L, rows, cols)."""
    rows, cols, l = c.shape
    return torch.full((l, rows, cols), float("nan"), dtype=c.dtype, device=c.device).permute(1, 2, 0)


def poison_output(problem: Problem) -> Problem:
    """The same problem with every output filled with NaN, so that any element a kernel leaves unwritten fails."""
    return problem.with_outputs([empty_like_output(c) for c in problem.spec.outputs(problem.data)])
