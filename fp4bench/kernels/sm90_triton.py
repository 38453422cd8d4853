"""Exact FP4 GEMMs in Triton for Hopper (sm_90a), and a portable Triton FP4 kernel.

Hopper has no FP4 tensor cores, so every kernel here dequantizes in registers and feeds the fp16, bf16 or
fp8 tensor cores (wgmma) with fp32 accumulation. Each dequantized operand value is exact:
  * NVFP4: e2m1 x e4m3 needs at most 6 significant bits and stays inside fp16's range -> fp16 (or bf16).
  * MXFP4: e2m1 x 2^k is exact in bf16 for 2^k inside bf16's range.
so the only rounding is the fp32 accumulation, as in the reference (`fp4bench.reference`).

Kernels (names as registered):
  sm90-nvfp4      NVFP4 x NVFP4 -> fp16, fp16 wgmma; e2m1 decoded by inline PTX (nibble -> e4m3 byte ->
                  cvt to f16x2, times the block scale in f16x2).
  sm90-mxfp4      MXFP4 x MXFP4 -> bf16, bf16 wgmma.
  sm90-mxfp4-fp8  MXFP4 x MXFP4 -> bf16 on fp8 wgmma: in each K tile, each row's largest block exponent is
                  factored out and the residual binades (up to FP8_FIT_BINADES - 1) are folded into e4m3
                  values (e2m1 x 2^(6 - r) is exact in e4m3 for r <= 14). A K tile in which any block does not
                  fit runs on bf16 wgmma instead, so the result stays exact. The factored exponents are
                  applied to each tile's fp32 partial product.
  sm90-w4a16      bf16 activations x NVFP4 or MXFP4 weights -> bf16, bf16 wgmma.
  triton-fp4      the same tile kernel with decoding in plain Triton arithmetic (no PTX): runs on any CUDA GPU
                  Triton supports, and on the CPU through Triton's interpreter.

Layout facts every kernel relies on (the competition's inputs, `fp4bench.problem`):
  * A and B are [rows, K // 2, L] K-major packed e2m1 bytes, element 0 in the low nibble. The kernels split
    K into its even and odd elements (low and high nibbles) and run two dots, or (tuning option join_k)
    interleave them back in registers and run one dot per K tile.
  * Tuning option pre_dequant_a: a first kernel dequantizes A once (at M = 128 every program of the GEMM would
    dequantize the same A tiles again) and the GEMM reads the dense A like W4A16's bf16 activations.
  * Scales are read straight from the blocked bytes behind sf*_permuted (`layouts.competition_blocked_bytes`):
    byte (r, c) of batch l at l * stride + (r // 128) * nK * 512 + (c // 4) * 512 + (r % 32) * 16
    + ((r // 32) % 4) * 4 + c % 4 with nK = ceil(K / block / 4) (`layouts.blocked_offset`).
  * The tiles are computed transposed (C^T = B A^T): N, the large dimension at M = 128, maps to wgmma's M and
    the dequantized B tile stays in registers as wgmma's A operand.
  * Split-K fills the GPU at small M: each split stores an fp32 partial tile to a workspace, and the last split
    to arrive (a per-tile counter) sums the partials in split order (deterministic) and writes C, then resets the
    counter for the next call. The workspace and counters are cached per device and grid.
Constraints: K a multiple of the format's block size (the format registry's rule); any M, N and L >= 1.
MXFP4 exactness needs the dequantized values and the accumulated result inside fp32's range (as the reference
does); in the fp8 kernel blocks more than 132 binades below their K tile's largest block drop out (their
products are below fp32's smallest normal relative to the tile's largest).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..codecs import as_bytes
from ..formats import GemmFormat
from ..layouts import ceil_div, competition_blocked_bytes
from ..problem import Problem, infer_format
from .base import Kernel

# Residual binades folded into e4m3 (r < FIT). e4m3 itself holds e2m1 x 2^(6 - r) exactly up to r = 14
# (0.5 x 2^-8 = 2^-9, its smallest subnormal), but Hopper's fp8 MMA adds the products of one instruction
# in a limited window below the largest; r <= 3 on both operands keeps one instruction's products within
# 7 + 3 + 3 = 13 binades of each other (see .notes/hopper.md).
FP8_FIT_BINADES = 4
# Autotuning in prepare() is worth its compile time only for problems of at least this many FLOPs.
AUTOTUNE_MIN_FLOPS = 2e9
SPLIT_K_MAX = 16
MIN_K_ITERS_PER_SPLIT = 2


# ---------------------------------------------------------------------------------------------------------
# Decoding (device functions)
# ---------------------------------------------------------------------------------------------------------
@triton.jit
def _e2m1_value(nibble):
    """int32 e2m1 codes (0..15) -> exact float32 values, by integer arithmetic (portable, interpreter-safe)."""
    mag = nibble & 7
    exp = mag >> 1
    man = mag & 1
    # value * 4: (2 + m) << e for normal codes, 2 * m for the subnormal 0.5.
    quarters = tl.where(exp > 0, (2 + man) << exp, man << 1)
    value = quarters.to(tl.float32) * 0.25
    return tl.where(nibble >= 8, -value, value)


@triton.jit
def _scale_value(code, E8M0: tl.constexpr):
    """int32 scale bytes -> exact float32 scales (e8m0: 2^(code - 127), 0xFF NaN; else e4m3fn)."""
    if E8M0:
        # code 0 is 2^-127, an fp32 subnormal; code << 23 covers the normal codes.
        bits = tl.where(code == 0, 0x00400000, code << 23)
        bits = tl.where(code == 255, 0x7FC00000, bits)
        return bits.to(tl.float32, bitcast=True)
    else:
        exp = (code >> 3) & 15
        man = code & 7
        normal = (((exp + 120) << 23) | (man << 20)).to(tl.float32, bitcast=True)
        value = tl.where(exp == 0, man.to(tl.float32) * 0.001953125, normal)
        value = tl.where((code & 0x7F) == 0x7F, float("nan"), value)
        return tl.where((code & 0x80) != 0, -value, value)


# Four packed bytes (eight e2m1 values) per PTX instance. A nibble s|m becomes the e4m3 byte s<<7 | m<<2,
# whose value is exactly e2m1 / 64; cvt turns byte pairs into f16x2, and one f16x2 multiply by (scale * 64)
# gives e2m1 * scale, exact in fp16 (|scale * 64| <= 448 * 64 < 65504). Outputs: $0,$1 the low nibbles of
# bytes 0..3, $2,$3 the high nibbles; inputs: $4 the bytes, $5,$6 the four (scale * 64) values as f16x2.
_DECODE_SCALED_F16_PTX = tl.constexpr("""
{
.reg .b32 t, u, lo, hi;
.reg .b16 l0, l1, h0, h1;
shl.b32 t, $4, 2;
and.b32 t, t, 0x1C1C1C1C;
shl.b32 u, $4, 4;
and.b32 u, u, 0x80808080;
or.b32 lo, t, u;
shr.b32 t, $4, 2;
and.b32 t, t, 0x1C1C1C1C;
and.b32 u, $4, 0x80808080;
or.b32 hi, t, u;
mov.b32 {l0, l1}, lo;
mov.b32 {h0, h1}, hi;
cvt.rn.f16x2.e4m3x2 $0, l0;
cvt.rn.f16x2.e4m3x2 $1, l1;
cvt.rn.f16x2.e4m3x2 $2, h0;
cvt.rn.f16x2.e4m3x2 $3, h1;
mul.rn.f16x2 $0, $0, $5;
mul.rn.f16x2 $1, $1, $6;
mul.rn.f16x2 $2, $2, $5;
mul.rn.f16x2 $3, $3, $6;
}
""")


@triton.jit
def _decode_pair(packed, scale, OUT_DTYPE: tl.constexpr, USE_ASM: tl.constexpr):
    """Packed bytes [R, C] and their per-byte scales (float32 [R, C]) -> (low, high) nibble values in OUT_DTYPE."""
    if USE_ASM:
        if OUT_DTYPE == tl.float16:
            scale64 = (scale * 64.0).to(tl.float16)
            lo, hi = tl.inline_asm_elementwise(
                _DECODE_SCALED_F16_PTX, "=r,=r,=r,=r,r,r,r", [packed, scale64],
                dtype=(tl.float16, tl.float16), is_pure=True, pack=4)
        else:
            # bf16 operands: decode e2m1 exactly to fp16 (unit scale), apply the scale in fp32.
            ones = tl.full(packed.shape, 64.0, tl.float16)
            lo16, hi16 = tl.inline_asm_elementwise(
                _DECODE_SCALED_F16_PTX, "=r,=r,=r,=r,r,r,r", [packed, ones],
                dtype=(tl.float16, tl.float16), is_pure=True, pack=4)
            lo = (lo16.to(tl.float32) * scale).to(OUT_DTYPE)
            hi = (hi16.to(tl.float32) * scale).to(OUT_DTYPE)
    else:
        codes = packed.to(tl.int32)
        lo = (_e2m1_value(codes & 15) * scale).to(OUT_DTYPE)
        hi = (_e2m1_value(codes >> 4) * scale).to(OUT_DTYPE)
    return lo, hi


@triton.jit
def _scale_row_words(rows, n_col_tiles):
    """Blocked-layout offset, in 4-byte words, of scale (row, column 0) for each row.

    The four scales of columns 4g..4g+3 of one row are one little-endian word, at row word + g * 128: loading
    words (not bytes) lets Triton pipeline the scale loads with cp.async like the element loads."""
    return (rows // 128) * n_col_tiles * 128 + (rows % 32) * 4 + (rows // 32) % 4


@triton.jit
def _load_scale_codes(sf_row, row_ok, it, sf_cols, R: tl.constexpr, NB: tl.constexpr):
    """Scale bytes of K tile `it` as int32 codes [R, NB] (0 outside the matrix) and their validity mask."""
    NW: tl.constexpr = NB // 4
    group = it * NW + tl.arange(0, NW)
    words = tl.load(sf_row[:, None] + (group * 128)[None, :], mask=row_ok[:, None] & (group * 4 < sf_cols)[None, :],
                    other=0)
    shifts = tl.arange(0, 4) * 8
    codes = tl.reshape((words[:, :, None] >> shifts[None, None, :]) & 255, (R, NB))
    col = it * NB + tl.arange(0, NB)
    valid = row_ok[:, None] & (col < sf_cols)[None, :]
    return tl.where(valid, codes, 0), valid


@triton.jit
def _per_byte(values, R: tl.constexpr, NB: tl.constexpr, PER: tl.constexpr):
    """[R, NB] per-block values -> [R, NB * PER] (each block's value repeated for its PER packed bytes)."""
    return tl.reshape(tl.broadcast_to(values[:, :, None], (R, NB, PER)), (R, NB * PER))


@triton.jit
def _load_fp4_tile(base, row_ok, sf_row, it, sf_cols, kb, k_ok, stride_k,
                   R: tl.constexpr, NB: tl.constexpr, PER: tl.constexpr, E8M0: tl.constexpr,
                   OUT_DTYPE: tl.constexpr, USE_ASM: tl.constexpr):
    """One K tile of a packed fp4 operand, dequantized: (low nibbles, high nibbles), each [R, BLOCK_K // 2]."""
    packed = tl.load(base + kb[None, :] * stride_k, mask=row_ok[:, None] & k_ok[None, :], other=0)
    codes, _ = _load_scale_codes(sf_row, row_ok, it, sf_cols, R, NB)
    scale = _per_byte(_scale_value(codes, E8M0), R, NB, PER)
    return _decode_pair(packed, scale, OUT_DTYPE, USE_ASM)


@triton.jit
def _store_tile(acc, c_ptr, ws_ptr, cnt_ptr, offs_n, offs_m, n_ok, m_ok, stride_cn, stride_cm, tile, pid_k,
                SPLIT_K, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
    """Write the [BLOCK_N, BLOCK_M] fp32 tile transposed into C, reducing split-K partials when SPLIT_K > 1."""
    TILE: tl.constexpr = BLOCK_N * BLOCK_M
    c_ptrs = c_ptr + offs_n[:, None] * stride_cn + offs_m[None, :] * stride_cm
    c_mask = n_ok[:, None] & m_ok[None, :]
    if SPLIT_K == 1:
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)
    else:
        local = tl.arange(0, BLOCK_N)[:, None] * BLOCK_M + tl.arange(0, BLOCK_M)[None, :]
        ws_tile = ws_ptr + tile.to(tl.int64) * (SPLIT_K * TILE)
        tl.store(ws_tile + pid_k * TILE + local, acc)
        # Every thread's partial must be written before the counter (released at GPU scope) says so.
        tl.debug_barrier()
        arrived = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
        if arrived == SPLIT_K - 1:
            total = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
            for s in range(SPLIT_K):
                # .cg reads L2: this SM's L1 may hold a previous call's partials.
                total += tl.load(ws_tile + s * TILE + local, cache_modifier=".cg")
            tl.store(c_ptrs, total.to(c_ptr.dtype.element_ty), mask=c_mask)
            tl.atomic_xchg(cnt_ptr + tile, 0)


@triton.jit
def _split_k_tile(M, N, K, SPLIT_K, SF_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_K: tl.constexpr):
    """This program's output tile (C^T rows n, columns m), batch, and its share of the K iterations."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_kl = tl.program_id(2)
    pid_k = pid_kl % SPLIT_K
    batch = pid_kl // SPLIT_K
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    sf_cols = K // SF_BLOCK
    k_iters = tl.cdiv(K, BLOCK_K)
    it_begin = pid_k * k_iters // SPLIT_K
    it_end = (pid_k + 1) * k_iters // SPLIT_K
    return (pid_n, pid_m, pid_k, batch, offs_n, offs_m, offs_n < N, offs_m < M, K // 2, sf_cols,
            tl.cdiv(sf_cols, 4), it_begin, it_end)


# ---------------------------------------------------------------------------------------------------------
# The fp16 / bf16 tile kernel (sm90-nvfp4, sm90-mxfp4, sm90-w4a16, triton-fp4)
# ---------------------------------------------------------------------------------------------------------
@triton.jit
def _fp4_gemm_kernel(
        a_ptr, b_ptr, sa_ptr, sb_ptr, c_ptr, ws_ptr, cnt_ptr,
        M, N, K, SPLIT_K,
        stride_am, stride_ak, stride_al, stride_bn, stride_bk, stride_bl, stride_sal, stride_sbl,
        stride_cm, stride_cn, stride_cl,
        A_DENSE: tl.constexpr, E8M0: tl.constexpr, SF_BLOCK: tl.constexpr, DOT_DTYPE: tl.constexpr,
        USE_ASM: tl.constexpr, JOIN_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
        BLOCK_K: tl.constexpr):
    HALF: tl.constexpr = BLOCK_K // 2
    NB: tl.constexpr = BLOCK_K // SF_BLOCK
    PER: tl.constexpr = SF_BLOCK // 2
    (pid_n, pid_m, pid_k, batch, offs_n, offs_m, n_ok, m_ok, half_k, sf_cols, sf_col_tiles, it_begin,
     it_end) = _split_k_tile(M, N, K, SPLIT_K, SF_BLOCK, BLOCK_N, BLOCK_M, BLOCK_K)

    b_base = b_ptr + batch * stride_bl + offs_n[:, None] * stride_bn
    sb_row = sb_ptr + batch * stride_sbl + _scale_row_words(offs_n, sf_col_tiles)
    a_base = a_ptr + batch * stride_al + offs_m[:, None] * stride_am
    if not A_DENSE:
        sa_row = sa_ptr + batch * stride_sal + _scale_row_words(offs_m, sf_col_tiles)

    acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    for it in range(it_begin, it_end):
        kb = it * HALF + tl.arange(0, HALF)
        k_ok = kb < half_k
        b_lo, b_hi = _load_fp4_tile(b_base, n_ok, sb_row, it, sf_cols, kb, k_ok, stride_bk,
                                    BLOCK_N, NB, PER, E8M0, DOT_DTYPE, USE_ASM)
        if A_DENSE:
            # One contiguous load (cp.async-able); split into even and odd K only for the two-dot form.
            ka = it * BLOCK_K + tl.arange(0, BLOCK_K)
            a_full = tl.load(a_base + ka[None, :] * stride_ak, mask=m_ok[:, None] & (ka < K)[None, :], other=0.0)
            if not JOIN_K:
                a_lo, a_hi = tl.split(tl.reshape(a_full, (BLOCK_M, HALF, 2)))
                a_lo = a_lo.to(DOT_DTYPE)
                a_hi = a_hi.to(DOT_DTYPE)
        else:
            a_lo, a_hi = _load_fp4_tile(a_base, m_ok, sa_row, it, sf_cols, kb, k_ok, stride_ak,
                                        BLOCK_M, NB, PER, E8M0, DOT_DTYPE, USE_ASM)
        # DOT_DTYPE float32 only in the interpreter: exact values, so no tf32 rounding either ("ieee").
        if JOIN_K:
            # One dot over the whole K tile: the same (interleaving) permutation of K on both operands.
            b_k = tl.reshape(tl.join(b_lo, b_hi), (BLOCK_N, BLOCK_K))
            if A_DENSE:
                # K in natural order on both sides: the dense A tile goes from its cp.async buffer straight
                # to wgmma, with no pass through registers.
                a_k = a_full.to(DOT_DTYPE)
            else:
                a_k = tl.reshape(tl.join(a_lo, a_hi), (BLOCK_M, BLOCK_K))
            if DOT_DTYPE == tl.float32:
                acc = tl.dot(b_k, tl.trans(a_k), acc, input_precision="ieee")
            else:
                acc = tl.dot(b_k, tl.trans(a_k), acc)
        elif DOT_DTYPE == tl.float32:
            acc = tl.dot(b_lo, tl.trans(a_lo.to(tl.float32)), acc, input_precision="ieee")
            acc = tl.dot(b_hi, tl.trans(a_hi.to(tl.float32)), acc, input_precision="ieee")
        else:
            acc = tl.dot(b_lo, tl.trans(a_lo), acc)
            acc = tl.dot(b_hi, tl.trans(a_hi), acc)

    tile = (batch * tl.num_programs(1) + pid_m) * tl.num_programs(0) + pid_n
    _store_tile(acc, c_ptr + batch * stride_cl, ws_ptr, cnt_ptr, offs_n, offs_m, n_ok, m_ok, stride_cn, stride_cm,
                tile, pid_k, SPLIT_K, BLOCK_N, BLOCK_M)


@triton.jit
def _dequant_rows_kernel(
        x_ptr, sx_ptr, out_ptr, R, K,
        stride_xr, stride_xk, stride_xl, stride_sxl, stride_or, stride_ol,
        E8M0: tl.constexpr, SF_BLOCK: tl.constexpr, OUT_DTYPE: tl.constexpr, USE_ASM: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """Dequantize a packed fp4 operand [R, K] (one batch per grid z) into a dense [R, K] tensor, once.

    At M = 128 every program of the GEMM would otherwise dequantize the same A tiles again."""
    HALF: tl.constexpr = BLOCK_K // 2
    NB: tl.constexpr = BLOCK_K // SF_BLOCK
    PER: tl.constexpr = SF_BLOCK // 2
    pid_r = tl.program_id(0)
    it = tl.program_id(1)
    batch = tl.program_id(2)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    r_ok = rows < R
    sf_cols = K // SF_BLOCK
    kb = it * HALF + tl.arange(0, HALF)
    k_ok = kb < K // 2
    x_base = x_ptr + batch * stride_xl + rows[:, None] * stride_xr
    sx_row = sx_ptr + batch * stride_sxl + _scale_row_words(rows, tl.cdiv(sf_cols, 4))
    lo, hi = _load_fp4_tile(x_base, r_ok, sx_row, it, sf_cols, kb, k_ok, stride_xk,
                            BLOCK_R, NB, PER, E8M0, OUT_DTYPE, USE_ASM)
    # Element 2j is the low nibble of byte j, 2j + 1 the high one.
    dense = tl.reshape(tl.join(lo, hi), (BLOCK_R, BLOCK_K))
    cols = it * BLOCK_K + tl.arange(0, BLOCK_K)
    tl.store(out_ptr + batch * stride_ol + rows[:, None] * stride_or + cols[None, :], dense,
             mask=r_ok[:, None] & (cols < K)[None, :])


# ---------------------------------------------------------------------------------------------------------
# The fp8 kernel (sm90-mxfp4-fp8)
# ---------------------------------------------------------------------------------------------------------
@triton.jit
def _mx_tile_exponents(codes, valid):
    """Per row of one K tile: the largest block exponent code, each block's residual binades, NaN flags."""
    usable = valid & (codes != 255)
    top = tl.max(tl.where(usable, codes, 0), axis=1)
    residual = tl.where(usable, top[:, None] - codes, 0)
    has_nan = tl.max((valid & (codes == 255)).to(tl.int32), axis=1)
    return top, residual, has_nan


@triton.jit
def _mx_residual_multiplier(residual, usable, R: tl.constexpr, NB: tl.constexpr, PER: tl.constexpr):
    """Per packed byte: 2^(6 - residual) as float32; 0 for NaN-scaled or out-of-range blocks."""
    # 2^(6 - r) by its fp32 bits; below 2^-126 the block is dropped (see the module notes).
    keep = usable & (residual <= 132)
    mult = tl.where(keep, ((133 - residual) << 23).to(tl.float32, bitcast=True), 0.0)
    return _per_byte(mult, R, NB, PER)


@triton.jit
def _mx_fp8_kernel(
        a_ptr, b_ptr, sa_ptr, sb_ptr, c_ptr, ws_ptr, cnt_ptr,
        M, N, K, SPLIT_K,
        stride_am, stride_ak, stride_al, stride_bn, stride_bk, stride_bl, stride_sal, stride_sbl,
        stride_cm, stride_cn, stride_cl,
        SF_BLOCK: tl.constexpr, FIT: tl.constexpr, WIDE_DTYPE: tl.constexpr, USE_ASM: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    HALF: tl.constexpr = BLOCK_K // 2
    NB: tl.constexpr = BLOCK_K // SF_BLOCK
    PER: tl.constexpr = SF_BLOCK // 2
    (pid_n, pid_m, pid_k, batch, offs_n, offs_m, n_ok, m_ok, half_k, sf_cols, sf_col_tiles, it_begin,
     it_end) = _split_k_tile(M, N, K, SPLIT_K, SF_BLOCK, BLOCK_N, BLOCK_M, BLOCK_K)

    b_base = b_ptr + batch * stride_bl + offs_n[:, None] * stride_bn
    a_base = a_ptr + batch * stride_al + offs_m[:, None] * stride_am
    sb_row = sb_ptr + batch * stride_sbl + _scale_row_words(offs_n, sf_col_tiles)
    sa_row = sa_ptr + batch * stride_sal + _scale_row_words(offs_m, sf_col_tiles)

    acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    nan_b = tl.zeros((BLOCK_N,), tl.int32)
    nan_a = tl.zeros((BLOCK_M,), tl.int32)
    for it in range(it_begin, it_end):
        kb = it * HALF + tl.arange(0, HALF)
        k_ok = kb < half_k
        b_packed = tl.load(b_base + kb[None, :] * stride_bk, mask=n_ok[:, None] & k_ok[None, :], other=0)
        a_packed = tl.load(a_base + kb[None, :] * stride_ak, mask=m_ok[:, None] & k_ok[None, :], other=0)
        b_codes, b_valid = _load_scale_codes(sb_row, n_ok, it, sf_cols, BLOCK_N, NB)
        a_codes, a_valid = _load_scale_codes(sa_row, m_ok, it, sf_cols, BLOCK_M, NB)
        b_top, b_res, b_nan = _mx_tile_exponents(b_codes, b_valid)
        a_top, a_res, a_nan = _mx_tile_exponents(a_codes, a_valid)
        nan_b = tl.maximum(nan_b, b_nan)
        nan_a = tl.maximum(nan_a, a_nan)
        b_mult = _mx_residual_multiplier(b_res, b_valid & (b_codes != 255), BLOCK_N, NB, PER)
        a_mult = _mx_residual_multiplier(a_res, a_valid & (a_codes != 255), BLOCK_M, NB, PER)
        fits = tl.maximum(tl.max(b_res), tl.max(a_res)) < FIT
        if fits:
            # e2m1 x 2^(6 - r) with r < FIT is exact in fp16 (the PTX decode's range) and in e4m3.
            b16_lo, b16_hi = _decode_pair(b_packed, b_mult, tl.float16, USE_ASM)
            a16_lo, a16_hi = _decode_pair(a_packed, a_mult, tl.float16, USE_ASM)
            # Hopper's fp8 MMA aligns the products of one instruction to the largest and keeps a limited
            # number of bits: promote to fp32 after every instruction (K = 32) and keep the residuals small
            # (FIT) so that one instruction's products span few enough binades to add exactly.
            part = tl.dot(b16_lo.to(tl.float8e4nv), tl.trans(a16_lo.to(tl.float8e4nv)), max_num_imprecise_acc=32)
            part = tl.dot(b16_hi.to(tl.float8e4nv), tl.trans(a16_hi.to(tl.float8e4nv)), part,
                          max_num_imprecise_acc=32)
        else:
            bw_lo, bw_hi = _decode_pair(b_packed, b_mult, WIDE_DTYPE, False)
            aw_lo, aw_hi = _decode_pair(a_packed, a_mult, WIDE_DTYPE, False)
            part = tl.dot(bw_lo, tl.trans(aw_lo), input_precision="ieee")
            part = tl.dot(bw_hi, tl.trans(aw_hi), part, input_precision="ieee")
        # Each operand carries 2^6 on top of its factored exponent: 2^(top - 127 - 6) per row.
        b_factor = _scale_value(b_top, True) * 0.015625
        a_factor = _scale_value(a_top, True) * 0.015625
        acc += part * (b_factor[:, None] * a_factor[None, :])

    any_nan = (nan_b[:, None] + nan_a[None, :]) > 0
    acc = tl.where(any_nan, float("nan"), acc)
    tile = (batch * tl.num_programs(1) + pid_m) * tl.num_programs(0) + pid_n
    _store_tile(acc, c_ptr + batch * stride_cl, ws_ptr, cnt_ptr, offs_n, offs_m, n_ok, m_ok, stride_cn, stride_cm,
                tile, pid_k, SPLIT_K, BLOCK_N, BLOCK_M)


# ---------------------------------------------------------------------------------------------------------
# Host side: tile configurations, split-K choice, launch
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TileConfig:
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


# GPU candidates, best-guess first (the first is used without autotuning).
GPU_CONFIGS = (
    TileConfig(128, 128, 8, 3, maxnreg=128, programs_per_sm=2, join_k=True),
    TileConfig(128, 128, 8, 2, maxnreg=128, programs_per_sm=2, join_k=True),  # fits two programs with dense A
    TileConfig(128, 128, 8, 3, maxnreg=128, programs_per_sm=2),
    TileConfig(128, 256, 8, 2, join_k=True),
    TileConfig(128, 256, 8, 2),
)
# The interpreter runs each program in numpy: small tiles keep CPU runs quick and still cover split-K.
CPU_CONFIG = TileConfig(32, 128, 4, 1, max_block_m=32)


def _block_m(m: int, cap: int) -> int:
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
    """Everything shape-dependent of one launch."""

    cfg: TileConfig
    block_m: int
    split_k: int
    # Dequantize A once in a first kernel and run the GEMM on the dense A (fp4 x fp4 formats only).
    pre_dequant_a: bool = False


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def plan_launch(cfg: TileConfig, m: int, n: int, k: int, l: int, device: torch.device,
                pre_dequant_a: bool = False) -> Launch:
    block_m = _block_m(m, cfg.max_block_m)
    tiles = ceil_div(n, cfg.block_n) * ceil_div(m, block_m) * l
    k_iters = ceil_div(k, cfg.block_k)
    slots = _sm_count(device) * cfg.programs_per_sm
    split = choose_split_k(tiles, k_iters, slots) if device.type == "cuda" else min(2, k_iters)
    return Launch(cfg, block_m, split, pre_dequant_a)


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


_WORKSPACES = _Workspaces()
_DOT_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def dot_dtype(fmt: GemmFormat, device: torch.device):
    """The dtype the tile kernel multiplies in: the format's exact dense dtype (bf16 with a dense A).

    Triton's CPU interpreter mishandles bf16 (its conversions truncate and its bf16 dot is wrong), so on the
    CPU the exact values are multiplied in fp32 instead.
    """
    dtype = torch.bfloat16 if not fmt.a.block_scaled else fmt.compute_dtype
    if device.type == "cpu" and dtype == torch.bfloat16:
        return tl.float32
    return _DOT_DTYPES[dtype]


def _dims(data: tuple, fmt: GemmFormat) -> tuple[int, int, int, int]:
    a, b = data[0], data[1]
    m, _, l = a.shape
    n = b.shape[0]
    k = b.shape[1] * fmt.b.element.per_byte
    return m, n, k, l


def _scale_words(permuted: torch.Tensor | None) -> torch.Tensor | None:
    """The blocked scale bytes as int32 words [L, rest * 128] (a view; each 128x4 tile is 512 bytes)."""
    if permuted is None:
        return None
    blocked = competition_blocked_bytes(permuted)
    if not blocked.is_contiguous():
        blocked = blocked.contiguous()
    return blocked.view(torch.uint8).view(torch.int32)


def launch_gemm(data: tuple, fmt: GemmFormat, plan: Launch, use_asm: bool, fp8: bool = False,
                fp8_fit: int = FP8_FIT_BINADES) -> torch.Tensor:
    """Compute data's GEMM into data[6] (C); one launch, two with pre_dequant_a. Returns C."""
    a, b, _, _, sfa_perm, sfb_perm, c = data
    m, n, k, l = _dims(data, fmt)
    cfg = plan.cfg
    a_dense = not fmt.a.block_scaled
    mult_dtype = dot_dtype(fmt, c.device)
    b_t = as_bytes(b)
    sfb = _scale_words(sfb_perm)
    if plan.pre_dequant_a and not a_dense and not fp8:
        a_t = _dequantize_a(a, _scale_words(sfa_perm), fmt, m, k, l, mult_dtype, use_asm)
        a_dense = True
    else:
        a_t = a if a_dense else as_bytes(a)
    sfa = sfb if a_dense else _scale_words(sfa_perm)   # a dense A has no scales; the pointer goes unused
    grid_n, grid_m = ceil_div(n, cfg.block_n), ceil_div(m, plan.block_m)
    tiles = grid_n * grid_m * l
    ws, cnt = _WORKSPACES.get(c.device, tiles, plan.split_k, cfg.block_n * plan.block_m)
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
        _mx_fp8_kernel[grid](*args, SF_BLOCK=fmt.b.block_size, FIT=fp8_fit,
                             WIDE_DTYPE=dot_dtype(fmt, c.device), USE_ASM=use_asm, **common)
    else:
        _fp4_gemm_kernel[grid](*args, A_DENSE=a_dense, E8M0=fmt.b.scale.power_of_two, SF_BLOCK=fmt.b.block_size,
                               DOT_DTYPE=mult_dtype, JOIN_K=cfg.join_k,
                               USE_ASM=use_asm, **common)
    return c


DEQUANT_BLOCK_R = 64
DEQUANT_BLOCK_K = 256


def _dequantize_a(a: torch.Tensor, sfa: torch.Tensor, fmt: GemmFormat, m: int, k: int, l: int, dtype,
                  use_asm: bool) -> torch.Tensor:
    torch_dtype = {tl.float16: torch.float16, tl.bfloat16: torch.bfloat16, tl.float32: torch.float32}[dtype]
    out = _WORKSPACES.dense(a.device, l, m, k, torch_dtype)
    x = as_bytes(a)
    grid = (ceil_div(m, DEQUANT_BLOCK_R), ceil_div(k, DEQUANT_BLOCK_K), l)
    _dequant_rows_kernel[grid](x, sfa, out, m, k, x.stride(0), x.stride(1), x.stride(2), sfa.stride(0),
                               out.stride(0), out.stride(2), E8M0=fmt.a.scale.power_of_two,
                               SF_BLOCK=fmt.a.block_size, OUT_DTYPE=dtype, USE_ASM=use_asm,
                               BLOCK_R=DEQUANT_BLOCK_R, BLOCK_K=DEQUANT_BLOCK_K, num_warps=4)
    return out


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# ---------------------------------------------------------------------------------------------------------
# Kernel entries
# ---------------------------------------------------------------------------------------------------------
class TritonFp4Kernel(Kernel):
    """A Triton FP4 GEMM; subclasses fix formats, targets, decoding and the math path."""

    use_asm = False
    fp8 = False
    graph_safe = True

    def __init__(self):
        self._plans: dict[tuple, Launch] = {}
        # Autotuning measurements per problem key: [(milliseconds, Launch)], for reports and notes.
        self.tuning: dict[tuple, list] = {}

    def unavailable_reason(self, target):
        reason = super().unavailable_reason(target)
        if reason:
            return reason
        if target.device == "cpu" and not interpreting():
            return "runs on the CPU only under Triton's interpreter: set TRITON_INTERPRET=1 before starting"
        if target.device == "cuda" and interpreting():
            return "TRITON_INTERPRET=1 is set: Triton kernels run in the CPU interpreter, not on the GPU"
        return None

    def _configs(self, device: torch.device) -> tuple[TileConfig, ...]:
        return GPU_CONFIGS if device.type == "cuda" else (CPU_CONFIG,)

    def _key(self, data: tuple, fmt: GemmFormat) -> tuple:
        return (fmt.name, str(data[6].device), _dims(data, fmt))

    def _plan(self, data: tuple, fmt: GemmFormat, cfg: TileConfig, pre_dequant_a: bool = False) -> Launch:
        m, n, k, l = _dims(data, fmt)
        return plan_launch(cfg, m, n, k, l, data[6].device, pre_dequant_a)

    def prepare(self, problem: Problem):
        data, fmt = problem.data, problem.fmt
        key = self._key(data, fmt)
        if key not in self._plans:
            configs = self._configs(data[6].device)
            if data[6].device.type == "cuda" and problem.shape.flops >= AUTOTUNE_MIN_FLOPS and len(configs) > 1:
                self._plans[key] = self._autotune(data, fmt, configs)
            else:
                self._plans[key] = self._plan(data, fmt, configs[0])
        plan = self._plans[key]
        # One launch on a scratch output compiles the kernel and allocates the split-K workspace here, outside
        # any timed region or CUDA-graph capture.
        launch_gemm(data[:6] + (torch.empty_like(data[6]),), fmt, plan, self.use_asm, self.fp8)
        return lambda d: launch_gemm(d, fmt, plan, self.use_asm, self.fp8)

    def _autotune(self, data: tuple, fmt: GemmFormat, configs) -> Launch:
        from triton.testing import do_bench

        scratch = data[:6] + (torch.empty_like(data[6]),)
        timed = []
        pre_options = (False, True) if fmt.a.block_scaled and not self.fp8 else (False,)
        for cfg, pre in [(cfg, pre) for cfg in configs for pre in pre_options]:
            plan = self._plan(data, fmt, cfg, pre)
            try:
                ms = do_bench(lambda: launch_gemm(scratch, fmt, plan, self.use_asm, self.fp8), warmup=5, rep=20)
            except Exception:  # a config the compiler or the GPU rejects (shared memory, registers) is skipped
                continue
            timed.append((ms, plan))
        self.tuning[self._key(data, fmt)] = sorted(timed, key=lambda t: t[0])
        if not timed:
            return self._plan(data, fmt, configs[0])
        return min(timed, key=lambda t: t[0])[1]

    def run(self, data: tuple) -> torch.Tensor:
        fmt = infer_format(data)
        key = self._key(data, fmt)
        plan = self._plans.get(key) or self._plan(data, fmt, self._configs(data[6].device)[0])
        return launch_gemm(data, fmt, plan, self.use_asm, self.fp8)


class HopperKernel(TritonFp4Kernel):
    """The sm_90a variants: PTX decode (cvt from e4m3) and wgmma, so Hopper only."""

    archs = ("sm_90a",)
    devices = ("cuda",)
    use_asm = True


class Sm90Nvfp4(HopperKernel):
    name = "sm90-nvfp4"
    formats = ("nvfp4",)
    math_path = "fp16"
    description = "NVFP4 x NVFP4 -> fp16: PTX e2m1 decode to fp16 in registers, fp16 wgmma, split-K (Triton)"


class Sm90Mxfp4(HopperKernel):
    name = "sm90-mxfp4"
    formats = ("mxfp4",)
    math_path = "bf16"
    description = "MXFP4 x MXFP4 -> bf16: exact bf16 dequantize in registers, bf16 wgmma, split-K (Triton)"


class Sm90Mxfp4Fp8(HopperKernel):
    name = "sm90-mxfp4-fp8"
    formats = ("mxfp4",)
    math_path = "fp8"
    fp8 = True
    description = ("MXFP4 x MXFP4 -> bf16 on fp8 wgmma: per-row tile exponents factored out, residuals folded "
                   "into exact e4m3; tiles that do not fit run on bf16 (Triton)")


class Sm90W4a16(HopperKernel):
    name = "sm90-w4a16"
    formats = ("w4a16-nvfp4", "w4a16-mxfp4")
    math_path = "bf16"
    description = "bf16 activations x NVFP4/MXFP4 weights -> bf16: weights dequantized in registers, bf16 wgmma"


class TritonFp4Portable(TritonFp4Kernel):
    name = "triton-fp4"
    formats = ("nvfp4", "mxfp4", "w4a16-nvfp4", "w4a16-mxfp4")
    archs = None
    devices = ("cpu", "cuda")
    description = "portable Triton FP4 GEMM (plain-Triton decode); on the CPU under TRITON_INTERPRET=1"

    def _configs(self, device: torch.device) -> tuple[TileConfig, ...]:
        # The portability reference: one configuration, no autotuning compile time.
        return super()._configs(device)[:1]


KERNELS = (Sm90Nvfp4(), Sm90Mxfp4(), Sm90Mxfp4Fp8(), Sm90W4a16(), TritonFp4Portable())

__all__ = ["KERNELS", "TileConfig", "Launch", "choose_split_k", "plan_launch", "launch_gemm", "FP8_FIT_BINADES"]
