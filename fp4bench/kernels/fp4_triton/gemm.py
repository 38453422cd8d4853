"""The fp16 / bf16 tile kernel (sm90-nvfp4, sm90-mxfp4, sm90-w4a16, triton-fp4) and the one-pass dequantizer
of a packed operand (the pre_dequant_a option). Design and exactness argument: .notes/hopper.md.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import load_fp4_tile, scale_row_words, split_k_tile, store_tile


@triton.jit
def fp4_gemm_kernel(
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
     it_end) = split_k_tile(M, N, K, SPLIT_K, SF_BLOCK, BLOCK_N, BLOCK_M, BLOCK_K)

    b_base = b_ptr + batch * stride_bl + offs_n[:, None] * stride_bn
    sb_row = sb_ptr + batch * stride_sbl + scale_row_words(offs_n, sf_col_tiles)
    a_base = a_ptr + batch * stride_al + offs_m[:, None] * stride_am
    if not A_DENSE:
        sa_row = sa_ptr + batch * stride_sal + scale_row_words(offs_m, sf_col_tiles)

    acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    for it in range(it_begin, it_end):
        kb = it * HALF + tl.arange(0, HALF)
        k_ok = kb < half_k
        b_lo, b_hi = load_fp4_tile(b_base, n_ok, sb_row, it, sf_cols, kb, k_ok, stride_bk,
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
            a_lo, a_hi = load_fp4_tile(a_base, m_ok, sa_row, it, sf_cols, kb, k_ok, stride_ak,
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
    store_tile(acc, c_ptr + batch * stride_cl, ws_ptr, cnt_ptr, offs_n, offs_m, n_ok, m_ok, stride_cn, stride_cm,
                tile, pid_k, SPLIT_K, BLOCK_N, BLOCK_M)


@triton.jit
def dequant_rows_kernel(
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
    sx_row = sx_ptr + batch * stride_sxl + scale_row_words(rows, tl.cdiv(sf_cols, 4))
    lo, hi = load_fp4_tile(x_base, r_ok, sx_row, it, sf_cols, kb, k_ok, stride_xk,
                            BLOCK_R, NB, PER, E8M0, OUT_DTYPE, USE_ASM)
    # Element 2j is the low nibble of byte j, 2j + 1 the high one.
    dense = tl.reshape(tl.join(lo, hi), (BLOCK_R, BLOCK_K))
    cols = it * BLOCK_K + tl.arange(0, BLOCK_K)
    tl.store(out_ptr + batch * stride_ol + rows[:, None] * stride_or + cols[None, :], dense,
             mask=r_ok[:, None] & (cols < K)[None, :])
