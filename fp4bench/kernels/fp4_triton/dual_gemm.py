"""sm90-dual-gemm's kernel: the competition's NVFP4 dual GEMM, c = silu(A·B1ᵀ) · (A·B2ᵀ) per batch, fp16 out.

One kernel computes both products of a tile and the epilogue: per K step the A tile is decoded once and
multiplied with the decoded B1 and B2 tiles into two fp32 accumulators (tiles computed transposed, C^T = B A^T,
like gemm.py: the B tiles are wgmma's register operand and the shared A tile its shared-memory operand). Every
decoded value is exact in fp16 (e2m1 x e4m3, subnormal scales included), so the products are the reference's
fp32 GEMMs up to summation order; silu(x) = x / (1 + exp(-x)) and the product are taken in fp32 and rounded
to fp16 once, as the reference does. Split-K: each split stores both fp32 partial tiles; the last program to
arrive adds them in split order (deterministic) and applies the epilogue.

Inputs: the competition's 10-tuple (a, b1, b2, sfa, sfb1, sfb2, sfa_permuted, sfb1_permuted, sfb2_permuted, c);
a [M, K // 2, L], b1 and b2 [N, K // 2, L] packed e2m1, K-major; scales read from the blocked bytes behind the
permuted views; c [M, N, L] fp16, every element written. Constraints: NVFP4 only; K a multiple of 16; any M, N,
L >= 1. Module interface: as gemv.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...arch import sm_count
from ...codecs import as_bytes
from ...layouts import ceil_div
from .common import dot_k_tile, load_fp4_tile, scale_row_words, split_k_tile
from .launch import WORKSPACES, checked_params, choose_split_k, dot_block_m, scale_words

# Two fp32 accumulators per program: 128 x 64 tiles keep them within one 8-warp program's registers.
DEFAULTS = dict(block_n=128, max_block_m=64, block_k=128, num_warps=8, num_stages=3, join_k=True, split_k=None)
GPU_CANDIDATES = (
    DEFAULTS,
    dict(DEFAULTS, num_stages=2),
    dict(DEFAULTS, join_k=False),
    dict(DEFAULTS, max_block_m=128, num_stages=2),
    dict(DEFAULTS, block_n=64, max_block_m=128, num_warps=4),
)
CPU_CONFIG = dict(DEFAULTS, block_n=32, max_block_m=32, block_k=64, num_warps=4, num_stages=1)


@triton.jit
def silu_mul(gate, up):
    """silu(gate) * up in fp32, silu as x / (1 + exp(-x)) (what the reference computes)."""
    return gate / (1.0 + tl.exp(-gate)) * up


@triton.jit
def fp4_dual_gemm_kernel(
        a_ptr, b1_ptr, b2_ptr, sa_ptr, sb1_ptr, sb2_ptr, c_ptr, ws_ptr, cnt_ptr, M, N, K, SPLIT_K,
        stride_am, stride_ak, stride_al, stride_bn, stride_bk, stride_bl, stride_sal, stride_sbl,
        stride_cm, stride_cn, stride_cl,
        USE_ASM: tl.constexpr, JOIN_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
        BLOCK_K: tl.constexpr):
    HALF: tl.constexpr = BLOCK_K // 2
    NB: tl.constexpr = BLOCK_K // 16
    PER: tl.constexpr = 8
    (pid_n, pid_m, pid_k, batch, offs_n, offs_m, n_ok, m_ok, half_k, sf_cols, sf_col_tiles, it_begin,
     it_end) = split_k_tile(M, N, K, SPLIT_K, 16, BLOCK_N, BLOCK_M, BLOCK_K)

    b_rows = batch * stride_bl + offs_n[:, None] * stride_bn
    sb_rows = batch * stride_sbl + scale_row_words(offs_n, sf_col_tiles)
    a_base = a_ptr + batch * stride_al + offs_m[:, None] * stride_am
    sa_row = sa_ptr + batch * stride_sal + scale_row_words(offs_m, sf_col_tiles)
    gate = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    up = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    for it in range(it_begin, it_end):
        kb = it * HALF + tl.arange(0, HALF)
        k_ok = kb < half_k
        a_lo, a_hi = load_fp4_tile(a_base, m_ok, sa_row, it, sf_cols, kb, k_ok, stride_ak,
                                   BLOCK_M, NB, PER, False, tl.float16, USE_ASM)
        b_lo, b_hi = load_fp4_tile(b1_ptr + b_rows, n_ok, sb1_ptr + sb_rows, it, sf_cols, kb, k_ok, stride_bk,
                                   BLOCK_N, NB, PER, False, tl.float16, USE_ASM)
        gate = dot_k_tile(gate, b_lo, b_hi, a_lo, a_hi, BLOCK_N, BLOCK_M, BLOCK_K, JOIN_K)
        b_lo, b_hi = load_fp4_tile(b2_ptr + b_rows, n_ok, sb2_ptr + sb_rows, it, sf_cols, kb, k_ok, stride_bk,
                                   BLOCK_N, NB, PER, False, tl.float16, USE_ASM)
        up = dot_k_tile(up, b_lo, b_hi, a_lo, a_hi, BLOCK_N, BLOCK_M, BLOCK_K, JOIN_K)

    c_ptrs = c_ptr + batch * stride_cl + offs_n[:, None] * stride_cn + offs_m[None, :] * stride_cm
    c_mask = n_ok[:, None] & m_ok[None, :]
    if SPLIT_K == 1:
        tl.store(c_ptrs, silu_mul(gate, up).to(tl.float16), mask=c_mask)
    else:
        # Per tile: SPLIT_K slots of (gate, up) partials; the counter (released at GPU scope) says when all are in.
        TILE: tl.constexpr = BLOCK_N * BLOCK_M
        tile = (batch * tl.num_programs(1) + pid_m) * tl.num_programs(0) + pid_n
        local = tl.arange(0, BLOCK_N)[:, None] * BLOCK_M + tl.arange(0, BLOCK_M)[None, :]
        ws_tile = ws_ptr + tile.to(tl.int64) * (SPLIT_K * 2 * TILE)
        tl.store(ws_tile + (2 * pid_k) * TILE + local, gate)
        tl.store(ws_tile + (2 * pid_k + 1) * TILE + local, up)
        tl.debug_barrier()
        arrived = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
        if arrived == SPLIT_K - 1:
            gate = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
            up = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
            for s in range(SPLIT_K):
                # .cg reads L2: this SM's L1 may hold a previous call's partials.
                gate += tl.load(ws_tile + (2 * s) * TILE + local, cache_modifier=".cg")
                up += tl.load(ws_tile + (2 * s + 1) * TILE + local, cache_modifier=".cg")
            tl.store(c_ptrs, silu_mul(gate, up).to(tl.float16), mask=c_mask)
            tl.atomic_xchg(cnt_ptr + tile, 0)


def candidates(device: torch.device) -> tuple[dict, ...]:
    return GPU_CANDIDATES if device.type == "cuda" else (CPU_CONFIG,)


def _sizes(data: tuple) -> tuple[int, int, int, int]:
    a, b1 = data[0], data[1]
    return a.shape[0], b1.shape[0], 2 * a.shape[1], a.shape[2]


def can_implement(data: tuple) -> str | None:
    a, b1, b2 = data[:3]
    if any(t.stride(1) != 1 for t in (a, b1, b2)):
        return "needs K-major a, b1 and b2 (packed bytes contiguous along K)"
    if b1.stride() != b2.stride():
        return "needs b1 and b2 with the same strides"
    return None


def resolve(data: tuple, config: dict, device: torch.device) -> dict:
    """`config` with block_m and split_k fixed for this input's sizes on `device` (the plan `launch` runs)."""
    plan = checked_params(config, DEFAULTS)
    m, n, k, l = _sizes(data)
    block_m = dot_block_m(m, plan["max_block_m"])
    k_iters = ceil_div(k, plan["block_k"])
    if plan["split_k"] is not None:
        split = max(1, min(plan["split_k"], k_iters))
    elif device.type == "cuda":
        tiles = ceil_div(n, plan["block_n"]) * ceil_div(m, block_m) * l
        split = choose_split_k(tiles, k_iters, sm_count(device))
    else:
        split = min(2, k_iters)   # the interpreter still covers the split-K reduction
    return {**plan, "block_m": block_m, "split_k": split}


def scratch_output(data: tuple) -> tuple:
    return data[:9] + (torch.empty_like(data[9]),)


def launch(data: tuple, plan: dict, use_asm: bool) -> torch.Tensor:
    """Compute data's dual GEMM into data[9] (c) in one launch; returns c."""
    a, b1, b2 = (as_bytes(t) for t in data[:3])
    sfa, sfb1, sfb2 = (scale_words(t) for t in data[6:9])
    c = data[9]
    m, n, k, l = _sizes(data)
    block_n, block_m, split = plan["block_n"], plan["block_m"], plan["split_k"]
    grid_n, grid_m = ceil_div(n, block_n), ceil_div(m, block_m)
    tiles = grid_n * grid_m * l
    # Two partial tiles (gate and up) per split.
    ws, cnt = WORKSPACES.get(c.device, tiles, 2 * split, block_n * block_m)
    fp4_dual_gemm_kernel[(grid_n, grid_m, split * l)](
        a, b1, b2, sfa, sfb1, sfb2, c, ws, cnt, m, n, k, split,
        a.stride(0), a.stride(1), a.stride(2), b1.stride(0), b1.stride(1), b1.stride(2), sfa.stride(0),
        sfb1.stride(0), c.stride(0), c.stride(1), c.stride(2),
        USE_ASM=use_asm, JOIN_K=plan["join_k"], BLOCK_N=block_n, BLOCK_M=block_m, BLOCK_K=plan["block_k"],
        num_warps=plan["num_warps"], num_stages=plan["num_stages"])
    return c
