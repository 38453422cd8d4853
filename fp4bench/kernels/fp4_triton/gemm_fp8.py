"""The fp8 tile kernel (sm90-mxfp4-fp8): MXFP4 x MXFP4 on fp8 wgmma, exact.

In each K tile, each row's largest block exponent is factored out and the residual binades (up to
FP8_FIT_BINADES - 1) are folded into e4m3 values (e2m1 x 2^(6 - r) is exact in e4m3 for r <= 14); a K tile
in which any block does not fit runs on bf16 wgmma instead. The factored exponents are applied to each
tile's fp32 partial product. Blocks more than 132 binades below their K tile's largest drop out (their
products are below fp32's smallest normal relative to the tile's largest). See .notes/hopper.md.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import (
    decode_pair,
    load_scale_codes,
    per_byte,
    scale_row_words,
    scale_value,
    split_k_tile,
    store_tile,
)

# Residual binades folded into e4m3 (r < FIT). e4m3 itself holds e2m1 x 2^(6 - r) exactly up to r = 14
# (0.5 x 2^-8 = 2^-9, its smallest subnormal), but Hopper's fp8 MMA adds the products of one instruction
# in a limited window below the largest; r <= 3 on both operands keeps one instruction's products within
# 7 + 3 + 3 = 13 binades of each other (see .notes/hopper.md).
FP8_FIT_BINADES = 4


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
    return per_byte(mult, R, NB, PER)


@triton.jit
def mx_fp8_kernel(
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
     it_end) = split_k_tile(M, N, K, SPLIT_K, SF_BLOCK, BLOCK_N, BLOCK_M, BLOCK_K)

    b_base = b_ptr + batch * stride_bl + offs_n[:, None] * stride_bn
    a_base = a_ptr + batch * stride_al + offs_m[:, None] * stride_am
    sb_row = sb_ptr + batch * stride_sbl + scale_row_words(offs_n, sf_col_tiles)
    sa_row = sa_ptr + batch * stride_sal + scale_row_words(offs_m, sf_col_tiles)

    acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    nan_b = tl.zeros((BLOCK_N,), tl.int32)
    nan_a = tl.zeros((BLOCK_M,), tl.int32)
    for it in range(it_begin, it_end):
        kb = it * HALF + tl.arange(0, HALF)
        k_ok = kb < half_k
        b_packed = tl.load(b_base + kb[None, :] * stride_bk, mask=n_ok[:, None] & k_ok[None, :], other=0)
        a_packed = tl.load(a_base + kb[None, :] * stride_ak, mask=m_ok[:, None] & k_ok[None, :], other=0)
        b_codes, b_valid = load_scale_codes(sb_row, n_ok, it, sf_cols, BLOCK_N, NB)
        a_codes, a_valid = load_scale_codes(sa_row, m_ok, it, sf_cols, BLOCK_M, NB)
        b_top, b_res, b_nan = _mx_tile_exponents(b_codes, b_valid)
        a_top, a_res, a_nan = _mx_tile_exponents(a_codes, a_valid)
        nan_b = tl.maximum(nan_b, b_nan)
        nan_a = tl.maximum(nan_a, a_nan)
        b_mult = _mx_residual_multiplier(b_res, b_valid & (b_codes != 255), BLOCK_N, NB, PER)
        a_mult = _mx_residual_multiplier(a_res, a_valid & (a_codes != 255), BLOCK_M, NB, PER)
        fits = tl.maximum(tl.max(b_res), tl.max(a_res)) < FIT
        if fits:
            # e2m1 x 2^(6 - r) with r < FIT is exact in fp16 (the PTX decode's range) and in e4m3.
            b16_lo, b16_hi = decode_pair(b_packed, b_mult, tl.float16, USE_ASM)
            a16_lo, a16_hi = decode_pair(a_packed, a_mult, tl.float16, USE_ASM)
            # Hopper's fp8 MMA aligns the products of one instruction to the largest and keeps a limited
            # number of bits: promote to fp32 after every instruction (K = 32) and keep the residuals small
            # (FIT) so that one instruction's products span few enough binades to add exactly.
            part = tl.dot(b16_lo.to(tl.float8e4nv), tl.trans(a16_lo.to(tl.float8e4nv)), max_num_imprecise_acc=32)
            part = tl.dot(b16_hi.to(tl.float8e4nv), tl.trans(a16_hi.to(tl.float8e4nv)), part,
                          max_num_imprecise_acc=32)
        else:
            bw_lo, bw_hi = decode_pair(b_packed, b_mult, WIDE_DTYPE, False)
            aw_lo, aw_hi = decode_pair(a_packed, a_mult, WIDE_DTYPE, False)
            part = tl.dot(bw_lo, tl.trans(aw_lo), input_precision="ieee")
            part = tl.dot(bw_hi, tl.trans(aw_hi), part, input_precision="ieee")
        # Each operand carries 2^6 on top of its factored exponent: 2^(top - 127 - 6) per row.
        b_factor = scale_value(b_top, True) * 0.015625
        a_factor = scale_value(a_top, True) * 0.015625
        acc += part * (b_factor[:, None] * a_factor[None, :])

    any_nan = (nan_b[:, None] + nan_a[None, :]) > 0
    acc = tl.where(any_nan, float("nan"), acc)
    tile = (batch * tl.num_programs(1) + pid_m) * tl.num_programs(0) + pid_n
    store_tile(acc, c_ptr + batch * stride_cl, ws_ptr, cnt_ptr, offs_n, offs_m, n_ok, m_ok, stride_cn, stride_cm,
                tile, pid_k, SPLIT_K, BLOCK_N, BLOCK_M)
