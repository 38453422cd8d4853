"""The Hopper FP4 GEMMs in CUDA C++ (kernels/sm90/): a warp-specialized, register-decoding wgmma mainloop.

Kernels (each a `Kernel`; one library holds every configuration):
  sm90-w4a16   bf16 activations x NVFP4 / MXFP4 weights -> bf16 (formats w4a16-nvfp4, w4a16-mxfp4)
  sm90-nvfp4   NVFP4 x NVFP4 -> fp16 (the competition's semantics) or bf16 (nvfp4-bf16)
  sm90-mxfp4   MXFP4 x MXFP4 -> bf16
The design (kernels/sm90/fp4w_gemm.cuh): C^T = dequant(B) A^T. A producer thread TMA-loads the packed weight
rows, the 16-bit activation tile and the blocked scale chunks into a multi-stage mbarrier ring; two consumer
warpgroups decode the weights straight into wgmma's register A operand and keep one wgmma in flight while they
decode the next K step; a persistent stream-K grid splits the (tile, K step) iterations evenly over the SMs and
the last CTA to finish a split tile sums its parts in K order. FP4 x FP4 first dequantizes A once per call (a
small kernel, timed with the GEMM) into fp16 (NVFP4: e2m1 x e4m3 is exact in fp16) or bf16 (MXFP4), then runs
the same mainloop. Every operand value is exact, so the only rounding is the fp32 accumulation.
The kernels read the competition's tensors in place (B and its blocked scales as handed over); nothing about
the weights is prepared outside the timed call.

Constraints (`can_implement`): K a multiple of 32 (16-byte TMA rows of packed e2m1); A (W4A16) and B
contiguous along K with 16-byte row and batch strides and 16-byte aligned bases; any M, N, L, any C strides.
Configuration: a tile (activation rows BN x weight rows 128 * MT, pipeline depth) from the tuned table, else by
M (`heuristic_config`); the grid is one CTA per SM.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..arch import Target, sm_count
from ..build import BuildSpec, BuildUnit, build, cached_product, toolchain_problem
from ..layouts import TILE_BYTES, TILE_COLS, TILE_ROWS, blocked_scale_address, ceil_div
from ..problem import Problem
from .base import Kernel, RunFn

SOURCE_DIR = "sm90"
GEMM_UNIT_SOURCE = "sm90/fp4w_unit.cu"
COMMON_UNIT_SOURCE = "sm90/fp4w_common.cu"
# TMA rows of packed e2m1 are K / 2 bytes and must be a multiple of 16.
K_MULTIPLE = 32
TMA_ALIGNMENT = 16
SMEM_LIMIT = 227 * 1024
# Shared-memory bytes of one pipeline stage: the swizzled activation tile, the packed weight rows, the scale
# chunks (kernels/sm90/fp4w_gemm.cuh, struct Gemm).
K_STEP = 64


@dataclass(frozen=True)
class Tile:
    """A CTA tile: `bn` activation rows (wgmma's N) x 64 * `mt` weight rows per consumer warpgroup, `ncw` consumer
    warpgroups, `stages` deep, `group` 16-deep K steps per wgmma commit group (the unit of decode/MMA overlap),
    `depth` groups left in flight while the next is decoded (kernels/sm90/fp4w_gemm.cuh, struct Gemm)."""

    bn: int
    mt: int
    stages: int
    group: int
    depth: int = 1
    ncw: int = 2

    @property
    def name(self) -> str:
        extra = (f"_d{self.depth}" if self.depth > 1 else "") + (f"_c{self.ncw}" if self.ncw != 2 else "")
        return f"bn{self.bn}_mt{self.mt}_s{self.stages}_g{self.group}" + extra

    @property
    def weight_rows(self) -> int:
        return 64 * self.mt * self.ncw

    @property
    def smem_bytes(self) -> int:
        stage = self.bn * 128 + self.weight_rows * K_STEP // 2 + ceil_div(self.weight_rows, TILE_ROWS) * TILE_BYTES
        return self.stages * stage + 2 * self.stages * 8 + 16 + 1024


@dataclass(frozen=True)
class Mainloop:
    """What the weights are and what both operands are multiplied in."""

    weights: str   # "nvfp4" or "mxfp4"
    mma: str       # "f16" or "bf16"

    def config(self, tile: Tile) -> str:
        return f"{self.weights}_{self.mma}_{tile.name}"

    def unit(self, tile: Tile) -> BuildUnit:
        defines = (("FP4W_NAME", self.config(tile)),
                   ("FP4W_WEIGHTS", {"nvfp4": "kNvfp4", "mxfp4": "kMxfp4"}[self.weights]),
                   ("FP4W_TYPE", {"f16": "__half", "bf16": "__nv_bfloat16"}[self.mma]),
                   ("FP4W_BN", str(tile.bn)), ("FP4W_MT", str(tile.mt)), ("FP4W_STAGES", str(tile.stages)),
                   ("FP4W_GROUP", str(tile.group)), ("FP4W_DEPTH", str(tile.depth)), ("FP4W_NCW", str(tile.ncw)))
        return BuildUnit(self.config(tile), GEMM_UNIT_SOURCE, defines)


# Small M streams the weights (decode-bound): narrow activation tiles, deep pipelines, a whole K step per wgmma
# group. M = 128 and up is tensor-bound: 128-wide tiles, 256 weight rows per CTA so that each activation tile
# feeds four m64 MMAs (whose 128 accumulators leave room for one K step per group only). The first tile of each
# width is the heuristic's.
TILES = (
    Tile(16, 1, 12, 4),
    Tile(16, 2, 12, 4),
    Tile(16, 1, 16, 4, ncw=4),
    Tile(32, 1, 12, 4, ncw=4),
    Tile(32, 1, 12, 4),
    Tile(64, 2, 8, 2),
    Tile(64, 1, 12, 4),
    Tile(128, 2, 8, 1),
    Tile(128, 1, 9, 2),
    Tile(128, 1, 9, 4),
    Tile(128, 1, 9, 1, 3),
    Tile(256, 1, 5, 1),
)
MAINLOOPS = (Mainloop("nvfp4", "f16"), Mainloop("nvfp4", "bf16"), Mainloop("mxfp4", "bf16"))
# By GEMM format: the mainloop, and whether A is FP4 (dequantized once per call into the 16-bit operand).
FORMAT_MAINLOOPS = {
    "w4a16-nvfp4": (Mainloop("nvfp4", "bf16"), False),
    "w4a16-mxfp4": (Mainloop("mxfp4", "bf16"), False),
    "nvfp4": (Mainloop("nvfp4", "f16"), True),
    "nvfp4-bf16": (Mainloop("nvfp4", "f16"), True),
    "mxfp4": (Mainloop("mxfp4", "bf16"), True),
}
LIBRARY = BuildSpec(
    "sm90-fp4w", "sm_90a",
    tuple(m.unit(t) for m in MAINLOOPS for t in TILES) + (BuildUnit("common", COMMON_UNIT_SOURCE),),
    source_dir=SOURCE_DIR, needs_cutlass=False)


# ------------------------------------------------------------------------------------- argument structs

class GemmArgsStruct(ctypes.Structure):
    """Mirror of Fp4wGemmArgs in kernels/sm90/fp4w_args.h (layout checked by tests)."""

    _fields_ = [
        ("x", ctypes.c_void_p), ("w", ctypes.c_void_p), ("w_scales", ctypes.c_void_p), ("c", ctypes.c_void_p),
        ("workspace", ctypes.c_void_p), ("counters", ctypes.c_void_p),
        ("m", ctypes.c_int32), ("n", ctypes.c_int32), ("k", ctypes.c_int32), ("l", ctypes.c_int32),
        ("x_row", ctypes.c_int64), ("x_batch", ctypes.c_int64),
        ("w_row", ctypes.c_int64), ("w_batch", ctypes.c_int64), ("w_scale_batch", ctypes.c_int64),
        ("c_row", ctypes.c_int64), ("c_col", ctypes.c_int64), ("c_batch", ctypes.c_int64),
        ("out_bf16", ctypes.c_int32), ("grid", ctypes.c_int32),
    ]


class DequantArgsStruct(ctypes.Structure):
    """Mirror of Fp4wDequantArgs in kernels/sm90/fp4w_args.h."""

    _fields_ = [
        ("a", ctypes.c_void_p), ("a_scales", ctypes.c_void_p), ("x", ctypes.c_void_p),
        ("m", ctypes.c_int32), ("k", ctypes.c_int32), ("l", ctypes.c_int32),
        ("a_row", ctypes.c_int64), ("a_batch", ctypes.c_int64), ("a_scale_batch", ctypes.c_int64),
    ]


def _k_major(t: torch.Tensor, what: str) -> tuple[int, int]:
    """(row stride, batch stride) in elements of a [rows, cols, L] operand the kernel reads with TMA."""
    s_row, s_col, s_batch = t.stride()
    if s_col != 1:
        raise ValueError(f"{what} must be contiguous along K (strides {t.stride()})")
    if t.shape[2] == 1:
        s_batch = t.shape[0] * s_row   # never stepped over; a canonical value keeps the check below honest
    size = t.element_size()
    for stride, name in ((s_row, "row"), (s_batch, "batch")):
        if (stride * size) % TMA_ALIGNMENT:
            raise ValueError(f"{what}'s {name} stride is {stride * size} bytes; TMA needs a multiple of {TMA_ALIGNMENT}")
    if t.data_ptr() % TMA_ALIGNMENT:
        raise ValueError(f"{what} is not {TMA_ALIGNMENT}-byte aligned")
    return s_row, s_batch


def _scale_batch_bytes(rows: int, k: int, block: int) -> int:
    return ceil_div(rows, TILE_ROWS) * ceil_div(k // block, TILE_COLS) * TILE_BYTES


# ---------------------------------------------------------------------------------------------- library

class Fp4wLibrary:
    """The built library: per configuration run / check / workspace_size / counter_count / describe."""

    def __init__(self, path: str):
        self.path = path
        self._lib = ctypes.CDLL(path)
        self._lib.fp4w_status_string.restype = ctypes.c_char_p
        self._lib.fp4w_status_string.argtypes = [ctypes.c_int]
        for fmt in ("nvfp4", "mxfp4"):
            fn = getattr(self._lib, f"fp4w_dequant_{fmt}")
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.POINTER(DequantArgsStruct), ctypes.c_void_p]

    def entry(self, config: str, what: str, restype, argtypes):
        fn = getattr(self._lib, f"fp4w_{config}_{what}")
        fn.restype = restype
        fn.argtypes = argtypes
        return fn

    def status(self, code: int) -> str:
        return self._lib.fp4w_status_string(code).decode()

    def describe(self, config: str) -> dict:
        out = (ctypes.c_int32 * 9)()
        self.entry(config, "describe", None, [ctypes.POINTER(ctypes.c_int32)])(out)
        return dict(zip(("weights", "bf16", "bn", "mt", "stages", "smem_bytes", "group", "depth", "ncw"), out))

    def runner(self, config: str):
        return self.entry(config, "run", ctypes.c_int, [ctypes.POINTER(GemmArgsStruct), ctypes.c_void_p])

    def workspace_size(self, config: str, args: GemmArgsStruct) -> int:
        return self.entry(config, "workspace_size", ctypes.c_size_t, [ctypes.POINTER(GemmArgsStruct)])(
            ctypes.byref(args))

    def counter_count(self, config: str, args: GemmArgsStruct) -> int:
        return self.entry(config, "counter_count", ctypes.c_int64, [ctypes.POINTER(GemmArgsStruct)])(
            ctypes.byref(args))

    def dequantizer(self, weights: str):
        return getattr(self._lib, f"fp4w_dequant_{weights}")


@lru_cache(maxsize=None)
def load_library() -> Fp4wLibrary:
    return Fp4wLibrary(str(build(LIBRARY)))


def current_stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


# ----------------------------------------------------------------------------------------------- kernel

class Sm90WgmmaKernel(Kernel):
    archs = ("sm_90a",)
    devices = ("cuda",)
    # A call is one ctypes call: tensor maps are encoded on the host and passed by value, the workspace and the
    # counters (left zero by every launch) are allocated in prepare.
    graph_safe = True

    def build_spec(self) -> BuildSpec:
        return LIBRARY

    def unavailable_reason(self, target: Target) -> str | None:
        reason = super().unavailable_reason(target)
        if reason:
            return reason
        problem = toolchain_problem(LIBRARY)
        if problem and cached_product(LIBRARY) is None:
            return f"not built and cannot build here: {problem}"
        return None

    def can_implement(self, problem: Problem) -> str | None:
        s = problem.shape
        if s.k % K_MULTIPLE:
            return f"K={s.k} is not a multiple of {K_MULTIPLE} (16-byte TMA rows of packed e2m1)"
        if max(s.m, s.n, s.k) >= 2**31:
            return "dimensions must fit in 32 bits"
        try:
            self._operands(problem.data, problem.fmt.name)
        except ValueError as e:
            return str(e)
        return None

    def _operands(self, data: tuple, fmt_name: str) -> tuple:
        """(a strides, b strides) after checking what TMA needs of the tensors."""
        a, b = data[0], data[1]
        a_strides = _k_major(a, "A")
        b_strides = _k_major(b, "B")
        return a_strides, b_strides

    def tuning_candidates(self, problem: Problem) -> tuple[dict, ...]:
        first = self.heuristic_config(problem)
        return (first,) + tuple({"tile": t.name} for t in TILES if t.name != first["tile"])

    def heuristic_config(self, problem: Problem) -> dict:
        m = problem.shape.m
        bn = next((b for b in (16, 32, 64) if m <= b), 128)
        tile = next(t for t in TILES if t.bn == bn)
        return {"tile": tile.name}

    def prepare(self, problem: Problem) -> RunFn:
        return self.prepare_config(problem, self.chosen_config(problem)[0])

    def prepare_config(self, problem: Problem, config: dict) -> RunFn:
        tile = next((t for t in TILES if t.name == config["tile"]), None)
        if tile is None:
            raise ValueError(f"{self.name} has no tile configuration {config['tile']!r}")
        lib = load_library()
        fmt = problem.fmt
        mainloop, dequantize_a = FORMAT_MAINLOOPS[fmt.name]
        name = mainloop.config(tile)
        run_fn = lib.runner(name)
        s = problem.shape
        device = problem.c.device
        grid = int(config.get("grid", sm_count(device)))
        out_bf16 = int(fmt.out_dtype == torch.bfloat16)
        wf = fmt.b
        w_block = wf.block_size
        w_scale_batch = _scale_batch_bytes(s.n, s.k, w_block)
        x_dtype = torch.float16 if mainloop.mma == "f16" else torch.bfloat16
        # FP4 x FP4: the dequantized A lives here for the whole case (every input set reuses it).
        x_buffer = torch.empty((s.l, s.m, s.k), dtype=x_dtype, device=device) if dequantize_a else None
        dequant_fn = lib.dequantizer(fmt.a.name) if dequantize_a else None

        def gemm_args(data: tuple) -> tuple[GemmArgsStruct, DequantArgsStruct | None]:
            a, b, c = data[0], data[1], data[6]
            (a_row, a_batch), (b_row, b_batch) = self._operands(data, fmt.name)
            w_scales = blocked_scale_address(data[5], s.n, wf.scale_cols(s.k), s.l, "sfb_permuted")
            dq = None
            if dequantize_a:
                a_scales = blocked_scale_address(data[4], s.m, fmt.a.scale_cols(s.k), s.l, "sfa_permuted")
                dq = DequantArgsStruct(a.data_ptr(), a_scales, x_buffer.data_ptr(), s.m, s.k, s.l, a_row, a_batch,
                                       _scale_batch_bytes(s.m, s.k, fmt.a.block_size))
                x_ptr, x_row, x_batch = x_buffer.data_ptr(), s.k, s.m * s.k
            else:
                x_ptr, x_row, x_batch = a.data_ptr(), a_row, a_batch
            c_row, c_col, c_batch = c.stride()
            args = GemmArgsStruct(x_ptr, b.data_ptr(), w_scales, c.data_ptr(), None, None, s.m, s.n, s.k, s.l,
                                  x_row, x_batch, b_row, b_batch, w_scale_batch, c_row, c_col, c_batch, out_bf16,
                                  grid)
            return args, dq

        first, _ = gemm_args(problem.data)
        workspace = torch.empty(max(lib.workspace_size(name, first), 1), dtype=torch.uint8, device=device)
        counters = torch.zeros(max(lib.counter_count(name, first), 1), dtype=torch.int32, device=device)
        kernel_name = self.name
        # Argument structs per input set (addresses and strides only; results are never kept).
        structs: dict[tuple, tuple] = {}

        def run(data: tuple) -> torch.Tensor:
            # sfa_permuted is None for W4A16 (dense activations).
            key = tuple(None if t is None else (t.data_ptr(), t.stride())
                        for t in (data[0], data[1], data[4], data[5], data[6]))
            entry = structs.get(key)
            if entry is None:
                if len(structs) >= 256:
                    structs.clear()
                args, dq = gemm_args(data)
                args.workspace, args.counters = workspace.data_ptr(), counters.data_ptr()
                entry = structs[key] = (args, dq)
            args, dq = entry
            stream = current_stream(device)
            if dq is not None:
                code = dequant_fn(ctypes.byref(dq), stream)
                if code:
                    raise RuntimeError(f"{kernel_name} (dequantize A): {lib.status(code)}")
            code = run_fn(ctypes.byref(args), stream)
            if code:
                raise RuntimeError(f"{kernel_name} ({name}): {lib.status(code)}")
            return data[6]

        return run


class Sm90W4a16(Sm90WgmmaKernel):
    name = "sm90-w4a16"
    formats = ("w4a16-nvfp4", "w4a16-mxfp4")
    math_path = "bf16"
    description = ("bf16 activations x NVFP4/MXFP4 weights -> bf16: warp-specialized wgmma, weights decoded in "
                   "registers, stream-K (CUDA)")


class Sm90Nvfp4(Sm90WgmmaKernel):
    name = "sm90-nvfp4"
    formats = ("nvfp4", "nvfp4-bf16")
    math_path = "fp16"
    description = ("NVFP4 x NVFP4 -> fp16: A dequantized once, warp-specialized fp16 wgmma, B decoded in "
                   "registers, stream-K (CUDA)")


class Sm90Mxfp4(Sm90WgmmaKernel):
    name = "sm90-mxfp4"
    formats = ("mxfp4",)
    math_path = "bf16"
    description = ("MXFP4 x MXFP4 -> bf16: A dequantized once, warp-specialized bf16 wgmma, B decoded in "
                   "registers, stream-K (CUDA)")


KERNELS = (Sm90W4a16(), Sm90Nvfp4(), Sm90Mxfp4())
