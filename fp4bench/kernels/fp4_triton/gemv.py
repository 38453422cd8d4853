"""sm90-gemv's kernel: the competition's NVFP4 GEMV, c[:, 0, l] = A_l · b_l (row 0 of b), fp16 out.

Memory bound (A is read once, nothing is reused), so no tensor cores and no padded GEMM: each program streams
BLOCK_M rows of A over its share of K in BLOCK_K steps on the CUDA cores; per step the vector's K slice is
decoded once and broadcast over the rows. At 4.2 TB/s an H200 can spend only about 8 instructions per byte of A
(132 SMs x 4 issue slots x ~2 GHz / 4.2e12 B/s x 32 lanes), so the decode is what the two paths trade:
  * factored (the default): A and the vector read as 32-bit words; per 16-element block, sa * sb * sum(ea * eb)
    over the bare e2m1 values, the sum an exact f16x2 fma chain in PTX (_BLOCK_DOT_PTX), scales decoded by the
    hardware cvt; the next step's words are loaded before this step is decoded. About 8.4 SASS instructions
    per byte of A on sm_90a (Triton 3.9's code, counted offline).
  * plain (factored=False): each factor e2m1 x e4m3 decoded exactly to fp16 (common.decode_pair), products and
    sums in fp32: about 15 instructions per byte, no new PTX.
Both are exact up to the fp32 summation order, as in the reference. When the row blocks alone cannot fill the
GPU (few rows, or one batch), K is split: each split stores its fp32 partials and the last program to arrive
adds them in split order (deterministic, common.store_tile) and writes c.

Interface (shared by gemv.py, dual_gemm.py and group_gemm.py; fp4_triton.kernel.TritonProblemKernel drives it):
candidates(device), resolve(data, config, device), launch(data, plan, use_asm), scratch_output(data),
can_implement(data).

Inputs: the competition's 7-tuple (a, b, sfa, sfb, sfa_permuted, sfb_permuted, c); a [M, K // 2, L] and b
[128, K // 2, L] packed e2m1, K-major; scales read from the blocked bytes behind the permuted views (b's row 0
only); c [M, 1, L] fp16, every element written. Constraints: NVFP4 only (e4m3 scales per 16 values); K a
multiple of 16; a and b 4-byte aligned; any M and L >= 1.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...arch import sm_count
from ...codecs import as_bytes
from ...layouts import ceil_div
from .common import (
    decode_pair,
    e2m1_value,
    e2m1_word_to_f16x2_ptx,
    load_fp4_tile,
    load_scale_words,
    scale_codes,
    scale_row_words,
    scale_value,
    store_tile,
)
from .launch import MIN_K_ITERS_PER_SPLIT, SPLIT_K_MAX, WORKSPACES, checked_params, scale_words

SF_BLOCK = 16

# programs_per_sm: split K until there are this many programs per multiprocessor (None split_k). About five of
# the default's (96 registers, 4 warps) are resident at once, so 16 makes three waves or more: memory-bound
# programs take about equally long, and the last, partial wave is a small share.
# num_stages 1: Triton pipelines only loads that feed a dot; the kernel prefetches by hand.
DEFAULTS = dict(block_m=32, block_k=512, num_warps=4, num_stages=1, factored=True, programs_per_sm=16,
                split_k=None)
# Tuning candidates on a GPU, the heuristic default first.
GPU_CANDIDATES = (
    DEFAULTS,
    dict(DEFAULTS, factored=False, block_m=16),   # products in fp32: no factored-scale PTX
    dict(DEFAULTS, block_m=16),
    dict(DEFAULTS, programs_per_sm=8),
    dict(DEFAULTS, block_m=64, num_warps=8),
    dict(DEFAULTS, block_k=1024),
)
# The interpreter: small steps so that the CPU tests cover several K steps and split-K quickly.
CPU_CONFIG = dict(DEFAULTS, block_k=128)


# Factored scales (launch option `factored`): per 16-element block, sum_k a_k b_k = sa * sb * sum_k ea_k eb_k with
# ea, eb the bare e2m1 values. Decoded as e2m1 / 64 (the e4m3 trick of common.decode_pair without its scale
# multiply), each product ea * eb / 4096 is a multiple of 2^-14 below 36 / 4096, so fp16 holds it and any sum of up
# to 14 of them exactly: one f16x2 fma chain per block (each lane adds 8 products) is exact, and the block's two
# lanes go to fp32 once. A and the vector are read as 32-bit words (four packed bytes, byte 0 lowest).

# One word of the vector -> its values as f16x2 words (e2m1 / 64): $0 the low nibbles of bytes 0 and 1, $1 of
# bytes 2 and 3, $2 and $3 the high nibbles likewise (element order: the lower byte in the lower half).
_DECODE_WORD_PTX = tl.constexpr("""
{
.reg .b32 t, u, lo, hi;
.reg .b16 l0, l1, h0, h1;
""" + e2m1_word_to_f16x2_ptx("$4", ("$0", "$1", "$2", "$3")) + """}
""")

# One block of A (its two words $1, $2) against the vector's values for it (_DECODE_WORD_PTX's outputs for the
# same two words: $3, $4 the low nibbles of bytes 0-1 of word 0 and word 1, $5, $6 of bytes 2-3, $7, $8 and $9,
# $10 the high nibbles likewise) -> $0 the block's sum in fp32, times 4096. One block per instance, its words as
# separate operands: correct whatever register layout Triton picks.
_BLOCK_DOT_PTX = tl.constexpr(
    """
{
.reg .b32 t, u, lo, hi, p0, p1, q0, q1, acc;
.reg .b16 l0, l1, h0, h1;
.reg .f32 s0, s1;
"""
    + e2m1_word_to_f16x2_ptx("$1", ("p0", "p1", "q0", "q1"))
    + """mul.rn.f16x2 acc, p0, $3;
fma.rn.f16x2 acc, p1, $5, acc;
fma.rn.f16x2 acc, q0, $7, acc;
fma.rn.f16x2 acc, q1, $9, acc;
"""
    + e2m1_word_to_f16x2_ptx("$2", ("p0", "p1", "q0", "q1"))
    + """fma.rn.f16x2 acc, p0, $4, acc;
fma.rn.f16x2 acc, p1, $6, acc;
fma.rn.f16x2 acc, q0, $8, acc;
fma.rn.f16x2 acc, q1, $10, acc;
mov.b32 {l0, l1}, acc;
cvt.f32.f16 s0, l0;
cvt.f32.f16 s1, l1;
add.f32 s0, s0, s1;
mov.b32 $0, s0;
}
""")

# An e4m3 scale code (0..255 in a 32-bit register, $1) -> its float32 value ($0), exactly (NaN, zero and
# subnormals included), by the hardware conversion: 4 instructions a scale instead of about 15. One code per
# instance, so any register layout Triton picks is fine.
_E4M3_SCALE_PTX = tl.constexpr("""
{
.reg .b32 f;
.reg .b16 c, x, h0, h1;
.reg .f32 s;
mov.b32 {c, x}, $1;
cvt.rn.f16x2.e4m3x2 f, c;
mov.b32 {h0, h1}, f;
cvt.f32.f16 s, h0;
mov.b32 $0, s;
}
""")


@triton.jit
def e4m3_scales(codes, USE_ASM: tl.constexpr):
    """int32 e4m3 codes (0..255) -> exact float32 scales."""
    if USE_ASM:
        return tl.inline_asm_elementwise(_E4M3_SCALE_PTX, "=r,r", [codes], dtype=tl.float32, is_pure=True,
                                         pack=1)
    else:
        return scale_value(codes, False)


# The units of the factored block sums: (e2m1 / 64)^2.
FACTORED_UNIT = tl.constexpr(4096.0)


@triton.jit
def word_values(words, R: tl.constexpr, W: tl.constexpr):
    """Packed words [R, W] -> e2m1 values [R, W * 8] in fp32, K order (byte j's low nibble, then its high)."""
    nibbles = (words[:, :, None] >> (tl.arange(0, 8) * 4)[None, None, :]) & 15
    return tl.reshape(e2m1_value(nibbles), (R, W * 8))


@triton.jit
def _vector_values(words, R: tl.constexpr, NB: tl.constexpr):
    """The vector's words [NB] (one per block, word 0 or 1 of it) as _DECODE_WORD_PTX's four f16x2 words, each
    broadcast over the R rows."""
    lo01, lo23, hi01, hi23 = tl.inline_asm_elementwise(
        _DECODE_WORD_PTX, "=r,=r,=r,=r,r", [words], dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True,
        pack=1)
    return (tl.broadcast_to(lo01[None, :], (R, NB)), tl.broadcast_to(lo23[None, :], (R, NB)),
            tl.broadcast_to(hi01[None, :], (R, NB)), tl.broadcast_to(hi23[None, :], (R, NB)))


@triton.jit
def block_dots(a_words, b_words, R: tl.constexpr, NB: tl.constexpr, USE_ASM: tl.constexpr):
    """Per row and 16-element block of A (a_words [R, NB * 2]) the exact sum of e2m1(A) x e2m1(b) over the block
    (b_words [NB * 2], the vector's words of the same K), [R, NB] fp32 in units of 1 / FACTORED_UNIT."""
    W: tl.constexpr = NB * 2
    if USE_ASM:
        a0, a1 = tl.split(tl.reshape(a_words, (R, NB, 2)))
        b0, b1 = tl.split(tl.reshape(b_words, (NB, 2)))
        lo01_0, lo23_0, hi01_0, hi23_0 = _vector_values(b0, R, NB)
        lo01_1, lo23_1, hi01_1, hi23_1 = _vector_values(b1, R, NB)
        return tl.inline_asm_elementwise(
            _BLOCK_DOT_PTX, "=r,r,r,r,r,r,r,r,r,r,r",
            [a0, a1, lo01_0, lo01_1, lo23_0, lo23_1, hi01_0, hi01_1, hi23_0, hi23_1],
            dtype=tl.float32, is_pure=True, pack=1)
    else:
        products = word_values(a_words, R, W) * word_values(b_words[None, :], 1, W) * (1.0 / FACTORED_UNIT)
        return tl.sum(tl.reshape(products, (R, NB, 16)), axis=2)


@triton.jit
def load_words(row_base, row_ok, it, it_end, k_words, WPS: tl.constexpr):
    """Words [R, WPS] of K step `it` of the rows at row_base; zeros outside the matrix or from step it_end on."""
    kw = it * WPS + tl.arange(0, WPS)
    return tl.load(row_base + kw[None, :], mask=row_ok[:, None] & (kw < tl.minimum(k_words, it_end * WPS))[None, :],
                   other=0)


@triton.jit
def vector_scales(sx_row, it, sf_cols, NB: tl.constexpr, USE_ASM: tl.constexpr):
    """The block scales [NB] (fp32) of K step `it` of one row whose scale words start at sx_row (row 0 of a tile)."""
    NW: tl.constexpr = NB // 4
    group = it * NW + tl.arange(0, NW)
    words = tl.load(sx_row + group * 128, mask=group * 4 < sf_cols, other=0)
    codes = tl.reshape((words[:, None] >> (tl.arange(0, 4) * 8)[None, :]) & 255, (NB,))
    codes = tl.where(it * NB + tl.arange(0, NB) < sf_cols, codes, 0)
    return e4m3_scales(codes, USE_ASM)


@triton.jit
def load_vector_tile(x_row, sx_row, it, sf_cols, kb, k_ok, stride_k, NB: tl.constexpr, PER: tl.constexpr,
                     USE_ASM: tl.constexpr):
    """K step `it` of one packed row (row 0 of its scale tile) as 1-D fp16 values e2m1 x scale (low nibbles,
    high nibbles)."""
    packed = tl.load(x_row + kb * stride_k, mask=k_ok, other=0)
    scale = tl.reshape(tl.broadcast_to(vector_scales(sx_row, it, sf_cols, NB, False)[:, None], (NB, PER)),
                       (NB * PER,))
    return decode_pair(packed, scale, tl.float16, USE_ASM)


@triton.jit
def fp4_gemv_kernel(
        a_ptr, b_ptr, sa_ptr, sb_ptr, c_ptr, ws_ptr, cnt_ptr, M, K, SPLIT_K,
        stride_am, stride_ak, stride_al, stride_bk, stride_bl, stride_sal, stride_sbl, stride_cm, stride_cn,
        stride_cl,
        FACTORED: tl.constexpr, USE_ASM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    HALF: tl.constexpr = BLOCK_K // 2
    NB: tl.constexpr = BLOCK_K // 16
    PER: tl.constexpr = 8
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    batch = tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    half_k = K // 2
    sf_cols = K // 16
    k_iters = tl.cdiv(K, BLOCK_K)
    it_begin = pid_k * k_iters // SPLIT_K
    it_end = (pid_k + 1) * k_iters // SPLIT_K

    a_base = a_ptr + batch.to(tl.int64) * stride_al + rows[:, None].to(tl.int64) * stride_am
    sa_row = sa_ptr + batch * stride_sal + scale_row_words(rows, tl.cdiv(sf_cols, 4))
    # The vector is row 0 of b, handled as 1-D tensors: broadcast over the rows, it is the one converted to the A
    # tile's register layout (a 2-D [1, HALF] tile would impose its layout on the A tile instead).
    b_row = b_ptr + batch.to(tl.int64) * stride_bl
    sb_row = sb_ptr + batch * stride_sbl
    acc = tl.zeros((BLOCK_M,), tl.float32)
    # Reduced in every step: a loop-carried [BLOCK_M, HALF] accumulator would take a layout of its own and cost a
    # conversion of the whole A tile through shared memory per step.
    if FACTORED:
        # a_ptr, b_ptr are 32-bit words here (strides in words). Software prefetch: step it + 1's words and scale
        # words are loaded before step it is computed, so each program keeps a load in flight while it decodes
        # (Triton pipelines only loads that feed a dot).
        WPS: tl.constexpr = HALF // 4
        k_words = K // 8
        # Scale columns from it_end on count as outside the matrix: the prefetch past the last step loads nothing.
        sf_end = tl.minimum(sf_cols, it_end * NB)
        a_words = load_words(a_base, row_ok, it_begin, it_end, k_words, WPS)
        sa_words = load_scale_words(sa_row, row_ok, it_begin, sf_end, NB)
        for it in range(it_begin, it_end):
            a_next = load_words(a_base, row_ok, it + 1, it_end, k_words, WPS)
            sa_next = load_scale_words(sa_row, row_ok, it + 1, sf_end, NB)
            kw = it * WPS + tl.arange(0, WPS)
            b_words = tl.load(b_row + kw * stride_bk, mask=kw < k_words, other=0)
            b_scale = vector_scales(sb_row, it, sf_cols, NB, USE_ASM)
            codes, _ = scale_codes(sa_words, row_ok, it, sf_cols, BLOCK_M, NB)
            scale = e4m3_scales(codes, USE_ASM) * (b_scale * FACTORED_UNIT)[None, :]
            acc += tl.sum(block_dots(a_words, b_words, BLOCK_M, NB, USE_ASM) * scale, axis=1)
            a_words = a_next
            sa_words = sa_next
    else:
        for it in range(it_begin, it_end):
            kb = it * HALF + tl.arange(0, HALF)
            k_ok = kb < half_k
            b_lo, b_hi = load_vector_tile(b_row, sb_row, it, sf_cols, kb, k_ok, stride_bk, NB, PER, USE_ASM)
            a_lo, a_hi = load_fp4_tile(a_base, row_ok, sa_row, it, sf_cols, kb, k_ok, stride_ak,
                                       BLOCK_M, NB, PER, False, tl.float16, USE_ASM)
            acc += tl.sum(a_lo.to(tl.float32) * b_lo.to(tl.float32)[None, :]
                          + a_hi.to(tl.float32) * b_hi.to(tl.float32)[None, :], axis=1)

    # c as a [rows, 1] tile: store_tile's "n" is the row and its "m" the single column.
    col0 = tl.arange(0, 1)
    store_tile(acc[:, None], c_ptr + batch * stride_cl, ws_ptr, cnt_ptr, rows, col0, row_ok, col0 < 1,
               stride_cm, stride_cn, batch * tl.num_programs(0) + pid_m, pid_k, SPLIT_K, BLOCK_M, 1)


def candidates(device: torch.device) -> tuple[dict, ...]:
    return GPU_CANDIDATES if device.type == "cuda" else (CPU_CONFIG,)


def _sizes(data: tuple) -> tuple[int, int, int]:
    a = data[0]
    return a.shape[0], 2 * a.shape[1], a.shape[2]


def can_implement(data: tuple) -> str | None:
    a, b = data[0], data[1]
    if a.stride(1) != 1 or b.stride(1) != 1:
        return "needs K-major a and b (packed bytes contiguous along K)"
    if any(t.data_ptr() % 4 or t.stride(0) % 4 or t.stride(2) % 4 for t in (a, b)):
        return "needs a and b at 4-byte aligned addresses and strides (read as 32-bit words)"
    return None


def choose_split_k(row_blocks: int, k_iters: int, programs: int) -> int:
    """Fewest K splits that give `programs` programs, each with >= 2 K steps."""
    wanted = ceil_div(programs, row_blocks)
    return max(1, min(wanted, SPLIT_K_MAX, k_iters // MIN_K_ITERS_PER_SPLIT))


def resolve(data: tuple, config: dict, device: torch.device) -> dict:
    """`config` with split_k fixed for this input's sizes on `device` (the plan `launch` runs)."""
    plan = checked_params(config, DEFAULTS)
    m, k, l = _sizes(data)
    k_iters = ceil_div(k, plan["block_k"])
    if plan["split_k"] is not None:
        split = max(1, min(plan["split_k"], k_iters))
    elif device.type == "cuda":
        programs = sm_count(device) * plan["programs_per_sm"]
        split = choose_split_k(ceil_div(m, plan["block_m"]) * l, k_iters, programs)
    else:
        split = min(2, k_iters)   # the interpreter still covers the split-K reduction
    return {**plan, "split_k": split}


def scratch_output(data: tuple) -> tuple:
    return data[:6] + (torch.empty_like(data[6]),)


def as_words(packed: torch.Tensor) -> torch.Tensor:
    """Packed bytes [rows, K // 2, L] (K-major) as 32-bit words [rows, K // 8, L], without a copy (K is a multiple
    of 16, so every row is whole words)."""
    return packed.permute(2, 0, 1).view(torch.int32).permute(1, 2, 0)


def launch(data: tuple, plan: dict, use_asm: bool) -> torch.Tensor:
    """Compute data's GEMV into data[6] (c) in one launch; returns c."""
    a, b, _, _, sfa_perm, sfb_perm, c = data
    m, k, l = _sizes(data)
    a_t, b_t = as_bytes(a), as_bytes(b)
    if plan["factored"]:
        a_t, b_t = as_words(a_t), as_words(b_t)
    sfa, sfb = scale_words(sfa_perm), scale_words(sfb_perm)
    block_m, split = plan["block_m"], plan["split_k"]
    grid_m = ceil_div(m, block_m)
    ws, cnt = WORKSPACES.get(c.device, grid_m * l, split, block_m)
    fp4_gemv_kernel[(grid_m, split, l)](
        a_t, b_t, sfa, sfb, c, ws, cnt, m, k, split,
        a_t.stride(0), a_t.stride(1), a_t.stride(2), b_t.stride(1), b_t.stride(2), sfa.stride(0), sfb.stride(0),
        c.stride(0), c.stride(1), c.stride(2),
        FACTORED=plan["factored"], USE_ASM=use_asm, BLOCK_M=block_m, BLOCK_K=plan["block_k"],
        num_warps=plan["num_warps"], num_stages=plan["num_stages"])
    return c
