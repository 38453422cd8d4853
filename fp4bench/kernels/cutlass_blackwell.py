"""CUTLASS block-scaled GEMMs for Blackwell: SM120 (RTX 5090, RTX PRO 6000) and SM100 (B200).

Variants (each a `Kernel`; sources in kernels/cutlass/, one templated definition and a config table):
  sm120-nvfp4       NVFP4 x NVFP4 -> fp16 (the competition's semantics); tile chosen per shape
  sm120-nvfp4-bf16  the same MMA with bf16 output (format "nvfp4-bf16")
  sm120-mxfp4       MXFP4 x MXFP4 -> bf16
  sm120-w4a8        MXFP8 activations x MXFP4 weights -> bf16 (the mxf8f6f4 MMA)
  sm120-mxfp8       MXFP8 x MXFP8 -> bf16 (the mxf8f6f4 MMA with e4m3 on both sides, example 79c's mainloop)
  sm100-nvfp4       NVFP4 x NVFP4 -> fp16 on B200 (1-SM tcgen05, CUTLASS example 72a's mainloop)
  sm100-w4a8        MXFP8 x MXFP4 -> bf16 on B200 (CUTLASS example 72c's operand mix)
  sm100-mxfp8       MXFP8 x MXFP8 -> bf16 on B200 (72c's mxf8f6f4 mainloop, e4m3 on both sides)
  sm120-nvfp4-grouped, sm100-nvfp4-grouped
                    the competition's group_gemm (problem kind "group_gemm"): every group's NVFP4 GEMM -> fp16
                    in one launch (CUTLASS ptr-array grouped GEMM, examples 79d and 75); returns the groups' C
Constraints: both operands K-major (the competition's layout; SM120 accepts no other); cluster 1x1x1; K a
multiple of 32 (16-byte rows of packed FP4; MXFP8's scale block), of 128 where FP4 meets FP8 (CUTLASS's
mxf8f6f4 alignment); N a multiple of 8 (16-byte output rows); M any. The kernels read the competition's
tensors in place: A/B through their [rows, K, L] strides, scales through the storage behind the permuted
6-D views (the blocked layout, one block per batch), C as D. Nothing is repacked in the timed path.

Grouped: per group L = 1 and the limits above; M per group any (the competition's are not multiples of
128). The groups' pointers, strides and per-group scale layouts go to CUTLASS as device arrays, packed by
the library's `pack` into one argument image, copied to the device on an input set's first call and
reused after (a call then initializes CUTLASS on it and launches).

Host-side argument setup is pure Python (`GemmArguments.from_data`, `grouped_arguments`), unit-tested on
the CPU; the compiled library exports a C ABI (kernels/cutlass/gemm_args.h) called through ctypes.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..arch import Target, sm_count
from ..build import HOST_TARGET, BuildSpec, BuildUnit, build, cached_product, toolchain_problem
from ..formats import GEMM_FORMATS, OperandFormat
from ..layouts import blocked_scale_address
from ..problem import GEMM, GROUP_GEMM, Problem, Shape
from .base import Kernel, RunFn

GEMM_UNIT_SOURCE = "cutlass/gemm_unit.cu"
GROUPED_UNIT_SOURCE = "cutlass/grouped_gemm_unit.cu"
# The compilation unit that instantiates a config, by problem kind.
UNIT_SOURCES = {GEMM: GEMM_UNIT_SOURCE, GROUP_GEMM: GROUPED_UNIT_SOURCE}
STATUS_UNIT_SOURCE = "cutlass/status.cu"
# Bytes per TMA-loaded row must be a multiple of 16.
TMA_ROW_BYTES = 16
# Distinct input sets whose argument structs a prepared kernel keeps (the competition times batches of 50).
MAX_CACHED_ARGUMENTS = 256


@dataclass(frozen=True)
class TileConfig:
    """One compiled configuration (a name in kernels/cutlass/configs.cuh) and the largest M it is chosen for."""

    name: str
    max_m: int | None = None   # chosen when M <= max_m; None: any M (the last row of a table)


@dataclass(frozen=True)
class Variant:
    name: str
    target: str                       # the compile target, also the only arch it runs on
    format: str                       # a GEMM format name (operands and output dtype)
    tiles: tuple[TileConfig, ...]     # the heuristic: the first whose max_m admits M (unless a tuned table says)
    k_multiple: int                   # from operand alignment (CUTLASS), beyond the format's block size
    n_multiple: int = 8
    description: str = ""
    problem: str = GEMM               # a problem kind of fp4bench.problem: which C entry points the library has

    def choose(self, m: int) -> TileConfig:
        for tile in self.tiles:
            if tile.max_m is None or m <= tile.max_m:
                return tile
        raise ValueError(f"{self.name}: no tile config for M={m}")

    def build_spec(self) -> BuildSpec:
        source = UNIT_SOURCES[self.problem]
        units = tuple(BuildUnit(t.name, source, (("FP4BENCH_CONFIG", t.name),)) for t in self.tiles)
        return BuildSpec(self.name, self.target, units + (BuildUnit("status", STATUS_UNIT_SOURCE),))


# The competition's shapes have M = 128 with large N and K: a 128-row tile with a deep K step there, a
# 256-row cooperative tile (more reuse of B) once M is larger.
VARIANTS = (
    Variant("sm120-nvfp4", "sm_120a", "nvfp4",
            (TileConfig("sm120_nvfp4_f16_128x128x256", max_m=128), TileConfig("sm120_nvfp4_f16_256x128x128")),
            k_multiple=32, description="CUTLASS SM120 NVFP4 x NVFP4 -> fp16 (mma.sync block_scale)"),
    Variant("sm120-nvfp4-bf16", "sm_120a", "nvfp4-bf16", (TileConfig("sm120_nvfp4_bf16_128x128x256"),),
            k_multiple=32, description="CUTLASS SM120 NVFP4 x NVFP4 -> bf16"),
    Variant("sm120-mxfp4", "sm_120a", "mxfp4", (TileConfig("sm120_mxfp4_bf16_128x128x256"),),
            k_multiple=32, description="CUTLASS SM120 MXFP4 x MXFP4 -> bf16"),
    Variant("sm120-w4a8", "sm_120a", "w4a8", (TileConfig("sm120_w4a8_bf16_128x128x128"),),
            k_multiple=128, description="CUTLASS SM120 MXFP8 x MXFP4 -> bf16 (mxf8f6f4 block_scale)"),
    Variant("sm120-mxfp8", "sm_120a", "mxfp8", (TileConfig("sm120_mxfp8_bf16_128x128x128"),),
            k_multiple=32, description="CUTLASS SM120 MXFP8 x MXFP8 -> bf16 (mxf8f6f4 block_scale)"),
    Variant("sm100-nvfp4", "sm_100a", "nvfp4", (TileConfig("sm100_nvfp4_f16_128x128x256"),),
            k_multiple=32, description="CUTLASS SM100 NVFP4 x NVFP4 -> fp16 (tcgen05, 1 SM)"),
    Variant("sm100-w4a8", "sm_100a", "w4a8", (TileConfig("sm100_w4a8_bf16_128x128x128"),),
            k_multiple=128, description="CUTLASS SM100 MXFP8 x MXFP4 -> bf16 (tcgen05, 1 SM)"),
    Variant("sm100-mxfp8", "sm_100a", "mxfp8", (TileConfig("sm100_mxfp8_bf16_128x128x128"),),
            k_multiple=32, description="CUTLASS SM100 MXFP8 x MXFP8 -> bf16 (tcgen05, 1 SM)"),
    # Grouped NVFP4 (the competition's group_gemm): every group in one persistent launch.
    Variant("sm120-nvfp4-grouped", "sm_120a", "nvfp4", (TileConfig("sm120_nvfp4_grouped_f16_128x128x128"),),
            k_multiple=32, problem=GROUP_GEMM,
            description="CUTLASS SM120 grouped NVFP4 -> fp16, one launch (ptr-array, example 79d)"),
    Variant("sm100-nvfp4-grouped", "sm_100a", "nvfp4", (TileConfig("sm100_nvfp4_grouped_f16_128x128x256"),),
            k_multiple=32, problem=GROUP_GEMM,
            description="CUTLASS SM100 grouped NVFP4 -> fp16, one launch (tcgen05 ptr-array, example 75)"),
)
VARIANTS_BY_NAME = {v.name: v for v in VARIANTS}
# Host-only program printing CUTLASS's scale-factor layout offsets for these configs (tests/test_cutlass_layout.py).
LAYOUT_PROBE = BuildSpec("cutlass-layout-probe", HOST_TARGET,
                         (BuildUnit("layout_probe", "cutlass/layout_probe.cpp"),), product="executable")
def operand_formats(fmt_name: str) -> tuple[OperandFormat, OperandFormat, torch.dtype]:
    f = GEMM_FORMATS[fmt_name]
    return f.a, f.b, f.out_dtype


# ------------------------------------------------------------------------------------- argument setup

class GemmArgsStruct(ctypes.Structure):
    """Mirror of Fp4benchGemmArgs in kernels/cutlass/gemm_args.h (layout checked by tests)."""

    _fields_ = [
        ("a", ctypes.c_void_p), ("b", ctypes.c_void_p), ("sfa", ctypes.c_void_p), ("sfb", ctypes.c_void_p),
        ("d", ctypes.c_void_p),
        ("m", ctypes.c_int32), ("n", ctypes.c_int32), ("k", ctypes.c_int32), ("l", ctypes.c_int32),
        ("lda", ctypes.c_int64), ("batch_stride_a", ctypes.c_int64),
        ("ldb", ctypes.c_int64), ("batch_stride_b", ctypes.c_int64),
        ("ldd", ctypes.c_int64), ("batch_stride_d", ctypes.c_int64),
        ("alpha", ctypes.c_float),
    ]


def _operand_strides(t: torch.Tensor, what: str, per_unit: int) -> tuple[int, int]:
    """(leading stride, batch stride) in elements of a [rows, cols, L] operand that must be row-contiguous."""
    if t.dim() != 3:
        raise ValueError(f"{what} must be [rows, cols, L], got {tuple(t.shape)}")
    s_row, s_col, s_batch = t.stride()
    if s_col != 1 and t.shape[1] > 1:
        raise ValueError(f"{what} must be contiguous along its last logical dimension (K-major); strides {t.stride()}")
    if t.shape[2] == 1:
        s_batch = t.shape[0] * s_row   # unused by the kernel; a packed value keeps the arguments canonical
    if (s_row * t.element_size()) % TMA_ROW_BYTES:
        raise ValueError(f"{what} rows are {s_row * t.element_size()} bytes apart; TMA needs a multiple of {TMA_ROW_BYTES}")
    return s_row * per_unit, s_batch * per_unit


@dataclass(frozen=True)
class GemmArguments:
    """Everything the C entry point needs, derived from a competition data tuple; strides in elements."""

    m: int
    n: int
    k: int
    l: int
    a: int
    b: int
    sfa: int
    sfb: int
    d: int
    lda: int
    batch_stride_a: int
    ldb: int
    batch_stride_b: int
    ldd: int
    batch_stride_d: int
    alpha: float = 1.0

    @classmethod
    def from_data(cls, data: tuple, fmt_name: str) -> "GemmArguments":
        fa, fb, out_dtype = operand_formats(fmt_name)
        a, b, _, _, sfa_perm, sfb_perm, c = data
        for t, op, what in ((a, fa, "A"), (b, fb, "B")):
            if t.dtype != op.element.storage_dtype:
                raise ValueError(f"{what} is {t.dtype}; {fmt_name} stores {op.name} as {op.element.storage_dtype}")
        if c.dtype != out_dtype:
            raise ValueError(f"C is {c.dtype}; this kernel writes {out_dtype}")
        m, a_cols, l = a.shape
        n = b.shape[0]
        k = a_cols * fa.element.per_byte
        if b.shape != (n, fb.storage_cols(k), l) or c.shape != (m, n, l):
            raise ValueError(f"inconsistent shapes A {tuple(a.shape)}, B {tuple(b.shape)}, C {tuple(c.shape)}")
        lda, bsa = _operand_strides(a, "A", fa.element.per_byte)
        ldb, bsb = _operand_strides(b, "B", fb.element.per_byte)
        ldd, bsd = _operand_strides(c, "C", 1)
        return cls(m, n, k, l, a.data_ptr(), b.data_ptr(),
                   blocked_scale_address(sfa_perm, m, fa.scale_cols(k), l, "sfa_permuted"),
                   blocked_scale_address(sfb_perm, n, fb.scale_cols(k), l, "sfb_permuted"),
                   c.data_ptr(), lda, bsa, ldb, bsb, ldd, bsd)

    def to_struct(self) -> GemmArgsStruct:
        return GemmArgsStruct(**{name: getattr(self, name) for name, _ in GemmArgsStruct._fields_})


# ---------------------------------------------------------------------------------------------- library

class CutlassLibrary:
    """A built variant's shared library: per tile config, can_implement / workspace_size / run."""

    def __init__(self, path: str):
        self.path = path
        self._lib = ctypes.CDLL(path)
        self._lib.fp4bench_status_string.restype = ctypes.c_char_p
        self._lib.fp4bench_status_string.argtypes = [ctypes.c_int]

    def _fn(self, config: str, what: str, argtypes):
        fn = getattr(self._lib, f"fp4bench_{config}_{what}")
        fn.restype = ctypes.c_int
        fn.argtypes = argtypes
        return fn

    def status(self, code: int) -> str:
        return self._lib.fp4bench_status_string(code).decode()

    def rejection(self, code: int) -> str | None:
        """What a can_implement return code means: None (accepted) or the reason."""
        # GemmUniversalAdapter answers kInvalid ("Invalid status") when the kernel's own checks fail.
        return None if code == 0 else f"CUTLASS's can_implement rejects the problem (alignment or shape): {self.status(code)}"

    def can_implement(self, config: str, args: GemmArgsStruct) -> str | None:
        code = self._fn(config, "can_implement", [ctypes.POINTER(GemmArgsStruct)])(ctypes.byref(args))
        return self.rejection(code)

    def workspace_size(self, config: str, args: GemmArgsStruct) -> int:
        size = ctypes.c_size_t(0)
        fn = self._fn(config, "workspace_size", [ctypes.POINTER(GemmArgsStruct), ctypes.POINTER(ctypes.c_size_t)])
        fn(ctypes.byref(args), ctypes.byref(size))
        return size.value

    def runner(self, config: str):
        return self._fn(config, "run", [ctypes.POINTER(GemmArgsStruct), ctypes.c_void_p, ctypes.c_void_p])


@lru_cache(maxsize=None)
def load_library(variant_name: str) -> CutlassLibrary:
    """The built library of a variant, with the entry points of its problem kind."""
    variant = VARIANTS_BY_NAME[variant_name]
    return LIBRARY_CLASSES[variant.problem](str(build(variant.build_spec())))


# ----------------------------------------------------------------------------------------------- kernel

def current_stream(device: torch.device) -> int:
    """The raw cudaStream_t torch is using on `device` (the kernels launch on it)."""
    return torch.cuda.current_stream(device).cuda_stream


class CutlassBlackwellKernel(Kernel):
    devices = ("cuda",)
    # Each call re-encodes TMA descriptors on the host (GemmUniversalAdapter::initialize); behaviour under
    # stream capture is unverified without Blackwell hardware, so timing uses plain launches.
    graph_safe = False

    def __init__(self, variant: Variant):
        self.variant = variant
        self.name = variant.name
        self.formats = (variant.format,)
        self.archs = (variant.target,)
        self.description = variant.description

    def build_spec(self) -> BuildSpec:
        return self.variant.build_spec()

    def unavailable_reason(self, target: Target) -> str | None:
        reason = super().unavailable_reason(target)
        if reason:
            return reason
        spec = self.build_spec()
        problem = toolchain_problem(spec)
        if problem and cached_product(spec) is None:
            return f"not built and cannot build here: {problem}"
        return None

    def can_implement(self, problem: Problem) -> str | None:
        return self.can_implement_shape(problem.shape)

    def can_implement_shape(self, shape: Shape) -> str | None:
        v = self.variant
        if shape.k % v.k_multiple:
            return f"K={shape.k} is not a multiple of {v.k_multiple} (CUTLASS operand alignment)"
        if shape.n % v.n_multiple:
            return f"N={shape.n} is not a multiple of {v.n_multiple} (16-byte output rows)"
        if max(shape.m, shape.n, shape.k) >= 2**31:
            return "dimensions must fit in 32 bits"
        return None

    def tuning_candidates(self, problem: Problem) -> tuple[dict, ...]:
        return tuple({"tile": t.name} for t in self.variant.tiles)

    def heuristic_config(self, problem: Problem) -> dict:
        return {"tile": self.variant.choose(problem.shape.m).name}

    def prepare(self, problem: Problem) -> RunFn:
        return self.prepare_config(problem, self.chosen_config(problem)[0])

    def prepare_config(self, problem: Problem, config: dict) -> RunFn:
        lib = load_library(self.name)
        tile = next((t for t in self.variant.tiles if t.name == config["tile"]), None)
        if tile is None:
            raise ValueError(f"{self.name} has no tile configuration {config['tile']!r}")
        args = GemmArguments.from_data(problem.data, self.variant.format).to_struct()
        reason = lib.can_implement(tile.name, args)
        if reason:
            raise RuntimeError(f"{self.name} ({tile.name}): {reason}")
        device = problem.c.device
        size = lib.workspace_size(tile.name, args)
        workspace = torch.empty(max(size, 1), dtype=torch.uint8, device=device)
        run_fn = lib.runner(tile.name)
        fmt_name, name = self.variant.format, self.name

        # Arguments depend only on addresses and strides: derive them once per distinct input set, so
        # the timed call is one ctypes call (results are never cached, only the argument struct).
        structs: dict[tuple, GemmArgsStruct] = {}

        def run(data: tuple) -> torch.Tensor:
            a, b, _, _, sfa_p, sfb_p, c = data
            key = (a.data_ptr(), b.data_ptr(), sfa_p.data_ptr(), sfb_p.data_ptr(), c.data_ptr(),
                   a.stride(), b.stride(), sfa_p.stride(), sfb_p.stride(), c.stride(), a.shape, b.shape, c.shape)
            st = structs.get(key)
            if st is None:
                if len(structs) >= MAX_CACHED_ARGUMENTS:
                    structs.clear()
                st = structs[key] = GemmArguments.from_data(data, fmt_name).to_struct()
            code = run_fn(ctypes.byref(st), workspace.data_ptr(), current_stream(device))
            if code:
                raise RuntimeError(f"{name} ({tile.name}): {lib.status(code)}")
            return data[6]

        return run


# ------------------------------------------------------------------------------ grouped GEMM (group_gemm)

class GroupStruct(ctypes.Structure):
    """Mirror of Fp4benchGroup in kernels/cutlass/gemm_args.h (layout checked by tests)."""

    _fields_ = [
        ("a", ctypes.c_void_p), ("b", ctypes.c_void_p), ("sfa", ctypes.c_void_p), ("sfb", ctypes.c_void_p),
        ("d", ctypes.c_void_p),
        ("m", ctypes.c_int32), ("n", ctypes.c_int32), ("k", ctypes.c_int32),
        ("lda", ctypes.c_int64), ("ldb", ctypes.c_int64), ("ldd", ctypes.c_int64),
    ]


class GroupedArgsStruct(ctypes.Structure):
    """Mirror of Fp4benchGroupedGemmArgs; `groups` points at a GroupStruct array the caller keeps alive."""

    _fields_ = [("groups", ctypes.POINTER(GroupStruct)), ("count", ctypes.c_int32),
                ("sm_count", ctypes.c_int32), ("alpha", ctypes.c_float)]


@dataclass(frozen=True)
class GroupArguments:
    """One group of a grouped problem as the C entry points take it; strides in elements, L = 1."""

    m: int
    n: int
    k: int
    a: int
    b: int
    sfa: int
    sfb: int
    d: int
    lda: int
    ldb: int
    ldd: int


def group_sizes(data: tuple) -> list[tuple[int, int, int, int]]:
    """The (m, n, k, l) of every group of a competition group_gemm tuple."""
    return [tuple(int(x) for x in size) for size in data[3]]


def grouped_arguments(data: tuple, fmt_name: str) -> tuple[GroupArguments, ...]:
    """Every group's pointers and strides, from the competition's group_gemm tuple, refusing what the kernel
    cannot read in place: ([(a, b, c)], [(sfa, sfb)], [(sfa_permuted, sfb_permuted)], [(m, n, k, l)])."""
    fa, fb, out_dtype = operand_formats(fmt_name)
    abc, _, permuted, sizes = data
    if not (len(abc) == len(permuted) == len(sizes)) or not sizes:
        raise ValueError(f"a grouped problem needs one (a, b, c), one permuted scale pair and one size per group; "
                         f"got {len(abc)}, {len(permuted)} and {len(sizes)}")
    groups = []
    for g, ((a, b, c), (sfa_perm, sfb_perm), size) in enumerate(zip(abc, permuted, sizes)):
        m, n, k, l = (int(x) for x in size)
        where = f"group {g}"
        if l != 1:
            raise ValueError(f"{where}: L={l}; grouped problems have L = 1")
        for t, op, what in ((a, fa, "A"), (b, fb, "B")):
            if t.dtype != op.element.storage_dtype:
                raise ValueError(f"{where}: {what} is {t.dtype}; {fmt_name} stores {op.name} as "
                                 f"{op.element.storage_dtype}")
        if c.dtype != out_dtype:
            raise ValueError(f"{where}: C is {c.dtype}; this kernel writes {out_dtype}")
        if (a.shape != (m, fa.storage_cols(k), 1) or b.shape != (n, fb.storage_cols(k), 1)
                or c.shape != (m, n, 1)):
            raise ValueError(f"{where}: shapes A {tuple(a.shape)}, B {tuple(b.shape)}, C {tuple(c.shape)} "
                             f"do not match its size {(m, n, k, l)}")
        for t, what in ((b, "B"), (c, "C"), (sfa_perm, "sfa_permuted"), (sfb_perm, "sfb_permuted")):
            if t.device != a.device:
                raise ValueError(f"{where}: {what} is on {t.device}, A on {a.device}; the kernel reads them all there")
        lda, _ = _operand_strides(a, f"{where}: A", fa.element.per_byte)
        ldb, _ = _operand_strides(b, f"{where}: B", fb.element.per_byte)
        ldd, _ = _operand_strides(c, f"{where}: C", 1)
        groups.append(GroupArguments(
            m, n, k, a.data_ptr(), b.data_ptr(),
            blocked_scale_address(sfa_perm, m, fa.scale_cols(k), 1, f"{where}: sfa_permuted"),
            blocked_scale_address(sfb_perm, n, fb.scale_cols(k), 1, f"{where}: sfb_permuted"),
            c.data_ptr(), lda, ldb, ldd))
    return tuple(groups)


@dataclass
class GroupedCall:
    """The C arguments of one input set: the structs (kept alive here) and the host argument image."""

    groups: ctypes.Array
    args: GroupedArgsStruct
    host_image: torch.Tensor                   # uint8 on the CPU: what CUTLASS's host-side checks read
    device_image: torch.Tensor | None = None   # the same bytes where the kernel reads them


def grouped_call(groups: tuple[GroupArguments, ...], sm_count: int, alpha: float = 1.0) -> GroupedCall:
    array = (GroupStruct * len(groups))(*(GroupStruct(**{f: getattr(q, f) for f, _ in GroupStruct._fields_})
                                          for q in groups))
    args = GroupedArgsStruct(array, len(groups), sm_count, alpha)
    return GroupedCall(array, args, torch.empty(0, dtype=torch.uint8))


class CutlassGroupedLibrary(CutlassLibrary):
    """A built grouped variant: per config, image_size / pack / can_implement / workspace_size / run."""

    def pack(self, config: str, call: GroupedCall) -> torch.Tensor:
        """Writes the argument image CUTLASS reads (problem shapes, pointers, strides, scale layouts)."""
        size = ctypes.c_size_t(0)
        self._fn(config, "image_size", [ctypes.c_int32, ctypes.POINTER(ctypes.c_size_t)])(
            call.args.count, ctypes.byref(size))
        image = torch.zeros(size.value, dtype=torch.uint8)
        self._fn(config, "pack", [ctypes.POINTER(GroupedArgsStruct), ctypes.c_void_p])(
            ctypes.byref(call.args), image.data_ptr())
        call.host_image = image
        return image

    def can_implement(self, config: str, call: GroupedCall) -> str | None:
        fn = self._fn(config, "can_implement", [ctypes.POINTER(GroupedArgsStruct), ctypes.c_void_p])
        return self.rejection(fn(ctypes.byref(call.args), call.host_image.data_ptr()))

    def workspace_size(self, config: str, call: GroupedCall) -> int:
        size = ctypes.c_size_t(0)
        fn = self._fn(config, "workspace_size",
                      [ctypes.POINTER(GroupedArgsStruct), ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)])
        fn(ctypes.byref(call.args), call.host_image.data_ptr(), ctypes.byref(size))
        return size.value

    def runner(self, config: str):
        return self._fn(config, "run", [ctypes.POINTER(GroupedArgsStruct), ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_void_p, ctypes.c_void_p])


LIBRARY_CLASSES = {GEMM: CutlassLibrary, GROUP_GEMM: CutlassGroupedLibrary}


class CutlassGroupedKernel(CutlassBlackwellKernel):
    """The competition's group_gemm: returns the list of every group's C (fp16), written in one launch."""

    def __init__(self, variant: Variant):
        super().__init__(variant)
        self.problems = (GROUP_GEMM,)

    def can_implement(self, problem: Problem) -> str | None:
        for g, (m, n, k, l) in enumerate(group_sizes(problem.data)):
            reason = "L must be 1" if l != 1 else self.can_implement_shape(Shape(m, n, k, l))
            if reason:
                return f"group {g} ({m}x{n}x{k}): {reason}"
        return None

    def tuning_candidates(self, problem: Problem) -> tuple[dict, ...]:
        return ({"tile": self.variant.tiles[0].name},)

    def heuristic_config(self, problem: Problem) -> dict:
        return {"tile": self.variant.tiles[0].name}

    def prepare_config(self, problem: Problem, config: dict) -> RunFn:
        lib = load_library(self.name)
        tile = next((t for t in self.variant.tiles if t.name == config["tile"]), None)
        if tile is None:
            raise ValueError(f"{self.name} has no tile configuration {config['tile']!r}")
        fmt_name, name = self.variant.format, self.name
        device = problem.data[0][0][0].device
        sms = sm_count(device)
        first = grouped_call(grouped_arguments(problem.data, fmt_name), sms)
        lib.pack(tile.name, first)
        reason = lib.can_implement(tile.name, first)
        if reason:
            raise RuntimeError(f"{name} ({tile.name}): {reason}")
        # The workspace depends on the SM count and the group count only, never on the sizes.
        workspace = torch.empty(max(lib.workspace_size(tile.name, first), 1), dtype=torch.uint8, device=device)
        run_fn = lib.runner(tile.name)
        # Per distinct input set: the argument image, packed and copied to the device once (an input set's
        # addresses and strides decide it; results are never cached).
        calls: dict[tuple, GroupedCall] = {}

        def run(data: tuple) -> list[torch.Tensor]:
            abc, _, permuted, sizes = data
            key = tuple((a.data_ptr(), b.data_ptr(), c.data_ptr(), sa.data_ptr(), sb.data_ptr(),
                         a.stride(), b.stride(), c.stride(), tuple(size))
                        for (a, b, c), (sa, sb), size in zip(abc, permuted, sizes))
            call = calls.get(key)
            if call is None:
                if len(calls) >= MAX_CACHED_ARGUMENTS:
                    calls.clear()
                call = grouped_call(grouped_arguments(data, fmt_name), sms)
                lib.pack(tile.name, call)
                call.device_image = call.host_image.to(device, copy=True)
                calls[key] = call
            code = run_fn(ctypes.byref(call.args), call.host_image.data_ptr(), call.device_image.data_ptr(),
                          workspace.data_ptr(), current_stream(device))
            if code:
                raise RuntimeError(f"{name} ({tile.name}): {lib.status(code)}")
            return [c for _, _, c in abc]

        return run


# The kernel class of each problem kind a variant computes.
KERNEL_CLASSES = {GEMM: CutlassBlackwellKernel, GROUP_GEMM: CutlassGroupedKernel}
KERNELS = tuple(KERNEL_CLASSES[v.problem](v) for v in VARIANTS)
