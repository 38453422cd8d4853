"""Host side of the FP4 Triton GEMMs: launch configurations, split-K choice, workspaces, the launch itself.

A `LaunchConfig` is every choice a launch depends on that is not fixed by the problem: tile sizes, warps,
stages, the register cap, single-dot K tiles, pre-dequantizing A, and optionally a fixed split-K count.
`resolve(config, shape, device)` turns it into a `Launch` (block M and split-K fixed for the shape); the
same config and shape on the same GPU model always give the same launch, and `Launch.to_dict()` records it.
Which config a shape gets is the kernel's business (fp4bench.kernels.fp4_triton.kernel: the tuned table,
else the documented heuristic); nothing here measures anything.

Constraints: K a multiple of the format's block size (the format registry's rule); any M, N and L >= 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import triton
import triton.language as tl

from ...arch import sm_count
from ...codecs import as_bytes
from ...formats import GemmFormat
from ...layouts import ceil_div, competition_blocked_bytes
from ...problem import Shape
from .gemm import dequant_rows_kernel, fp4_gemm_kernel
from .gemm_fp8 import FP8_FIT_BINADES, mx_fp8_kernel
from .mxfp8 import mxfp8_kernel

SPLIT_K_MAX = 16
MIN_K_ITERS_PER_SPLIT = 2
DEQUANT_BLOCK_R = 64
DEQUANT_BLOCK_K = 256


@dataclass(frozen=True)
class LaunchConfig:
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    max_block_m: int = 128
    # A register cap (ptx .maxnreg) that lets two programs share a multiprocessor: at M = 128 one program
    # of 8 warps leaves the SM idle while it waits on loads, barriers and wgmma (ncu: 0.36 eligible warps).
    maxnreg: int | None = None
    programs_per_sm: int = 1
    # One dot over the K tile (nibbles interleaved back) instead of one per nibble: one wgmma wait, not two.
    join_k: bool = False
    # Dequantize A once in a first kernel and run the GEMM on the dense A (fp4 x fp4 formats only).
    pre_dequant_a: bool = False
    # A fixed split-K count; None: the count that best fills the GPU in whole waves (`choose_split_k`).
    split_k: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LaunchConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown launch parameter(s) {', '.join(sorted(unknown))}")
        return cls(**d)


# GPU candidates for tuning (`fp4bench tune`), the heuristic default first.
GPU_CANDIDATES = (
    LaunchConfig(128, 128, 8, 3, maxnreg=128, programs_per_sm=2, join_k=True),
    LaunchConfig(128, 128, 8, 2, maxnreg=128, programs_per_sm=2, join_k=True),  # fits two programs with dense A
    LaunchConfig(128, 128, 8, 3, maxnreg=128, programs_per_sm=2),
    LaunchConfig(128, 256, 8, 2, join_k=True),
    LaunchConfig(128, 256, 8, 2),
)
# The interpreter runs each program in numpy: small tiles keep CPU runs quick and still cover split-K.
CPU_CONFIG = LaunchConfig(32, 128, 4, 1, max_block_m=32)

# sm90-mxfp8-fp8 (fp8 operands straight from memory, no decode): 64-row C^T tiles on one warpgroup (4 warps), so
# the fp32 accumulator, the partial products of blocks in flight and the scale vectors fit in registers; K
# tiles of one to four MX blocks. The first is the heuristic's choice, an untimed guess: the deepest pipeline
# that ptxas compiles for sm_90a without spilling (tests/test_mxfp8.py). All compute the same sums: the
# choice is speed only.
MXFP8_GPU_CANDIDATES = (
    LaunchConfig(64, 64, 4, 6),
    LaunchConfig(64, 128, 4, 4),
    LaunchConfig(64, 128, 4, 3, programs_per_sm=2),
    LaunchConfig(64, 128, 4, 6),
    LaunchConfig(128, 32, 8, 6),
)
MXFP8_CPU_CONFIG = LaunchConfig(32, 64, 4, 1, max_block_m=32)


def dot_block_m(m: int, cap: int) -> int:
    # tl.dot needs every dimension >= 16.
    return max(16, min(cap, triton.next_power_of_2(m)))


def choose_split_k(tiles: int, k_iters: int, sms: int) -> int:
    """Split count that best fills `sms` multiprocessors in whole waves; ties go to fewer splits."""
    best, best_score = 1, -1.0
    for split in range(1, min(SPLIT_K_MAX, max(1, k_iters // MIN_K_ITERS_PER_SPLIT)) + 1):
        ctas = tiles * split
        efficiency = ctas / (ceil_div(ctas, sms) * sms)
        # A small price per extra split: each adds a partial tile to write and read back.
        score = efficiency - 0.01 * split
        if score > best_score + 1e-9:
            best, best_score = split, score
    return best


@dataclass(frozen=True)
class Launch:
    """A config resolved for one shape on one device: everything the launch depends on."""

    cfg: LaunchConfig
    block_m: int
    split_k: int

    def to_dict(self) -> dict:
        d = self.cfg.to_dict()
        d.update(block_m=self.block_m, split_k=self.split_k)
        return d


def resolve(cfg: LaunchConfig, shape: Shape, device: torch.device) -> Launch:
    """The launch of `cfg` for `shape` on `device`: block M from M, split-K fixed or fitted to the SM count."""
    block_m = dot_block_m(shape.m, cfg.max_block_m)
    k_iters = ceil_div(shape.k, cfg.block_k)
    if cfg.split_k is not None:
        split = max(1, min(cfg.split_k, k_iters))
    elif device.type == "cuda":
        tiles = ceil_div(shape.n, cfg.block_n) * ceil_div(shape.m, block_m) * shape.l
        split = choose_split_k(tiles, k_iters, sm_count(device) * cfg.programs_per_sm)
    else:
        split = min(2, k_iters)   # the interpreter still covers the split-K reduction
    return Launch(cfg, block_m, split)


def checked_params(config: dict, defaults: dict) -> dict:
    """`config` over `defaults` (a kernel's launch parameters as a dict); an unknown parameter is an error."""
    unknown = set(config) - set(defaults)
    if unknown:
        raise ValueError(f"unknown launch parameter(s) {', '.join(sorted(unknown))}")
    return {**defaults, **config}


class _Workspaces:
    """Split-K partial tiles and arrival counters, per device and grid; counters are left at zero by each call."""

    def __init__(self):
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, device: torch.device, tiles: int, split: int, tile_elems: int):
        key = (str(device), tiles, split, tile_elems)
        if key not in self._cache:
            ws = torch.empty(tiles * split * tile_elems, dtype=torch.float32, device=device)
            cnt = torch.zeros(tiles, dtype=torch.int32, device=device)
            self._cache[key] = (ws, cnt)
        return self._cache[key]

    def dense(self, device: torch.device, l: int, rows: int, k: int, dtype: torch.dtype) -> torch.Tensor:
        """A dense [rows, K, L] buffer (a view of a contiguous (L, rows, K) tensor) for a dequantized operand."""
        key = ("dense", str(device), l, rows, k, dtype)
        if key not in self._cache:
            self._cache[key] = torch.empty((l, rows, k), dtype=dtype, device=device).permute(1, 2, 0)
        return self._cache[key]


WORKSPACES = _Workspaces()
_DOT_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}
_TORCH_DTYPES = {tl.float16: torch.float16, tl.bfloat16: torch.bfloat16, tl.float32: torch.float32}


def dot_dtype(fmt: GemmFormat, device: torch.device):
    """The dtype the tile kernel multiplies in: the format's exact dense dtype (bf16 with a dense A).

    Triton's CPU interpreter mishandles bf16 (its conversions truncate and its bf16 dot is wrong), so on the
    CPU the exact values are multiplied in fp32 instead.
    """
    dtype = torch.bfloat16 if not fmt.a.block_scaled else fmt.compute_dtype
    if device.type == "cpu" and dtype == torch.bfloat16:
        return tl.float32
    return _DOT_DTYPES[dtype]


def scale_words(permuted: torch.Tensor | None) -> torch.Tensor | None:
    """The blocked scale bytes as int32 words [L, rest * 128] (a view; each 128x4 tile is 512 bytes)."""
    if permuted is None:
        return None
    blocked = competition_blocked_bytes(permuted)
    if not blocked.is_contiguous():
        blocked = blocked.contiguous()
    return blocked.view(torch.uint8).view(torch.int32)


def launch_gemm(data: tuple, shape: Shape, fmt: GemmFormat, plan: Launch, use_asm: bool, fp8: bool = False,
                fp8_fit: int = FP8_FIT_BINADES) -> torch.Tensor:
    """Compute data's GEMM into data[6] (C); one launch, two with pre_dequant_a. Returns C."""
    a, b, _, _, sfa_perm, sfb_perm, c = data
    m, n, k, l = shape.m, shape.n, shape.k, shape.l
    cfg = plan.cfg
    a_dense = not fmt.a.block_scaled
    mult_dtype = dot_dtype(fmt, c.device)
    b_t = as_bytes(b)
    sfb = scale_words(sfb_perm)
    if cfg.pre_dequant_a and not a_dense and not fp8:
        a_t = _dequantize_a(a, scale_words(sfa_perm), fmt, shape, mult_dtype, use_asm)
        a_dense = True
    else:
        a_t = a if a_dense else as_bytes(a)
    sfa = sfb if a_dense else scale_words(sfa_perm)   # a dense A has no scales; the pointer goes unused
    grid_n, grid_m = ceil_div(n, cfg.block_n), ceil_div(m, plan.block_m)
    tiles = grid_n * grid_m * l
    ws, cnt = WORKSPACES.get(c.device, tiles, plan.split_k, cfg.block_n * plan.block_m)
    grid = (grid_n, grid_m, plan.split_k * l)
    # SPLIT_K is a run-time argument: one compiled kernel serves every split count.
    args = (a_t, b_t, sfa, sfb, c, ws, cnt, m, n, k, plan.split_k,
            a_t.stride(0), a_t.stride(1), a_t.stride(2), b_t.stride(0), b_t.stride(1), b_t.stride(2),
            sfa.stride(0), sfb.stride(0), c.stride(0), c.stride(1), c.stride(2))
    common = dict(BLOCK_N=cfg.block_n, BLOCK_M=plan.block_m, BLOCK_K=cfg.block_k,
                  num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    if cfg.maxnreg is not None and c.device.type == "cuda":
        common["maxnreg"] = cfg.maxnreg
    if fp8:
        mx_fp8_kernel[grid](*args, SF_BLOCK=fmt.b.block_size, FIT=fp8_fit,
                            WIDE_DTYPE=dot_dtype(fmt, c.device), USE_ASM=use_asm, **common)
    else:
        fp4_gemm_kernel[grid](*args, A_DENSE=a_dense, E8M0=fmt.b.scale.power_of_two, SF_BLOCK=fmt.b.block_size,
                              DOT_DTYPE=mult_dtype, JOIN_K=cfg.join_k, USE_ASM=use_asm, **common)
    return c


def scale_bytes(permuted: torch.Tensor) -> torch.Tensor:
    """The blocked scale bytes as uint8 [L, rest * 512] (a view when the storage allows)."""
    blocked = competition_blocked_bytes(permuted)
    return as_bytes(blocked if blocked.is_contiguous() else blocked.contiguous())


def launch_mxfp8(data: tuple, shape: Shape, plan: Launch, mma_dtype) -> torch.Tensor:
    """sm90-mxfp8-fp8's GEMM of data into data[6] (C), one launch; `mma_dtype` the tl dtype the blocks multiply in."""
    a, b, _, _, sfa_perm, sfb_perm, c = data
    m, n, k, l = shape.m, shape.n, shape.k, shape.l
    cfg = plan.cfg
    # e4m3 goes in typed (Triton's fp8e4nv), so the tiles reach the MMA without a conversion.
    a_t, b_t = as_bytes(a).view(torch.float8_e4m3fn), as_bytes(b).view(torch.float8_e4m3fn)
    sfa, sfb = scale_bytes(sfa_perm), scale_bytes(sfb_perm)
    grid_n, grid_m = ceil_div(n, cfg.block_n), ceil_div(m, plan.block_m)
    ws, cnt = WORKSPACES.get(c.device, grid_n * grid_m * l, plan.split_k, cfg.block_n * plan.block_m)
    extra = {"maxnreg": cfg.maxnreg} if cfg.maxnreg is not None and c.device.type == "cuda" else {}
    mxfp8_kernel[(grid_n, grid_m, plan.split_k * l)](
        a_t, b_t, sfa, sfb, c, ws, cnt, m, n, k, plan.split_k,
        a_t.stride(0), a_t.stride(1), a_t.stride(2), b_t.stride(0), b_t.stride(1), b_t.stride(2),
        sfa.stride(0), sfb.stride(0), c.stride(0), c.stride(1), c.stride(2),
        MMA_DTYPE=mma_dtype, BLOCK_N=cfg.block_n, BLOCK_M=plan.block_m, BLOCK_K=cfg.block_k,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, **extra)
    return c


def _dequantize_a(a: torch.Tensor, sfa: torch.Tensor, fmt: GemmFormat, shape: Shape, dtype,
                  use_asm: bool) -> torch.Tensor:
    m, k, l = shape.m, shape.k, shape.l
    out = WORKSPACES.dense(a.device, l, m, k, _TORCH_DTYPES[dtype])
    x = as_bytes(a)
    grid = (ceil_div(m, DEQUANT_BLOCK_R), ceil_div(k, DEQUANT_BLOCK_K), l)
    dequant_rows_kernel[grid](x, sfa, out, m, k, x.stride(0), x.stride(1), x.stride(2), sfa.stride(0),
                              out.stride(0), out.stride(2), E8M0=fmt.a.scale.power_of_two,
                              SF_BLOCK=fmt.a.block_size, OUT_DTYPE=dtype, USE_ASM=use_asm,
                              BLOCK_R=DEQUANT_BLOCK_R, BLOCK_K=DEQUANT_BLOCK_K, num_warps=4)
    return out
