"""sm90-mxfp8's and sm90-mxfp8-fp8's kernel: MXFP8 x MXFP8 -> bf16 on Hopper, e4m3 operands straight to
the tensor cores, each e8m0 scale pair applied per 32-element K block in the fp32 accumulator (per-block
promotion).

Per K block of 32 (one scale per operand row): part = dot(B_blk, A_blk^T) from a zero accumulator (one fp8
wgmma of K = 32), then acc += (part * sb[:, None]) * sa[None, :] in fp32. The scales are powers of two, so
applying them is exact (barring fp32 underflow or overflow, where the reference's own dequantized values
underflow or overflow too); a NaN scale (0xFF) makes its rows NaN as in the reference.

Exactness: every e4m3 x e4m3 product has at most 8 significant bits and is exact in fp32, and e4m3 values
are exact in bf16. With MMA_DTYPE bf16 (sm90-mxfp8) the block sums are accumulated like every other
fp32-accumulating kernel of the project. With MMA_DTYPE fp8 (sm90-mxfp8-fp8) they are added by Hopper's fp8
MMA, which aligns one instruction's products to the largest and keeps a limited number of bits below it
(.notes/hopper.md, "fp8 finding"): random e4m3 data spans up to 35 binades of products per block, far more
than that window, so the block sum can lose low-order bits. Promoting after every block bounds the loss to
one instruction's window relative to that block's largest product. On the H200 that failed the exact check
(a few hundred of 10^5..10^6 elements, off by up to 2^12 where large products cancel), so the fp8 variant
declares the fp8-adder bound (fp4bench.reference.fp8_mma_allowance); `scripts/mxfp8_accumulation.py`
measures the loss. Under TRITON_INTERPRET=1 (the CPU tests)
MMA_DTYPE is float32: the same algorithm on exact values.

Layout: computes C^T tiles (B rows on the MMA's M, as the FP4 tile kernels do), reads the competition's
tensors in place ([rows, K, L] K-major e4m3, the blocked scale bytes behind the permuted views), split-K
with the shared in-kernel reduction (common.store_tile). Constraints: K a multiple of 32; any M, N, L.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import scale_row_words, scale_value, split_k_tile, store_tile

MX_BLOCK = 32


@triton.jit
def _block_scales(sf_row_bytes, row_ok, col, sf_cols):
    """The scale of K block `col` for each row, as exact float32 (1.0 outside the matrix, NaN for 0xFF).

    sf_row_bytes: byte offset of each row's column 0 in the blocked layout; columns 4g..4g+3 of a row are
    contiguous bytes, 128 words (512 bytes) apart per group g."""
    cols = tl.full(row_ok.shape, col, tl.int32)
    ok = row_ok & (cols < sf_cols)
    codes = tl.load(sf_row_bytes + (cols // 4) * 512 + cols % 4, mask=ok, other=127)
    return scale_value(codes.to(tl.int32), True)


@triton.jit
def mxfp8_kernel(
        a_ptr, b_ptr, sa_ptr, sb_ptr, c_ptr, ws_ptr, cnt_ptr,
        M, N, K, SPLIT_K,
        stride_am, stride_ak, stride_al, stride_bn, stride_bk, stride_bl, stride_sal, stride_sbl,
        stride_cm, stride_cn, stride_cl,
        MMA_DTYPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    SUB: tl.constexpr = 32     # the MX block: one scale per row per SUB elements of K
    NB: tl.constexpr = BLOCK_K // SUB
    (pid_n, pid_m, pid_k, batch, offs_n, offs_m, n_ok, m_ok, _, sf_cols, sf_col_tiles, it_begin,
     it_end) = split_k_tile(M, N, K, SPLIT_K, SUB, BLOCK_N, BLOCK_M, BLOCK_K)

    b_base = b_ptr + batch * stride_bl + offs_n[:, None] * stride_bn
    a_base = a_ptr + batch * stride_al + offs_m[:, None] * stride_am
    sb_row = sb_ptr + batch * stride_sbl + scale_row_words(offs_n, sf_col_tiles) * 4
    sa_row = sa_ptr + batch * stride_sal + scale_row_words(offs_m, sf_col_tiles) * 4

    acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    for it in range(it_begin, it_end):
        for j in tl.static_range(NB):
            kk = (it * NB + j) * SUB + tl.arange(0, SUB)
            k_ok = kk < K
            b_blk = tl.load(b_base + kk[None, :] * stride_bk, mask=n_ok[:, None] & k_ok[None, :], other=0.0)
            a_blk = tl.load(a_base + kk[None, :] * stride_ak, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            if MMA_DTYPE == tl.float8e4nv:
                # Both tiles straight from their cp.async buffers to wgmma (shared-memory descriptors).
                part = tl.dot(b_blk, tl.trans(a_blk))
            elif MMA_DTYPE == tl.float32:
                part = tl.dot(b_blk.to(tl.float32), tl.trans(a_blk.to(tl.float32)), input_precision="ieee")
            else:
                part = tl.dot(b_blk.to(MMA_DTYPE), tl.trans(a_blk.to(MMA_DTYPE)))
            sb = _block_scales(sb_row, n_ok, it * NB + j, sf_cols)
            sa = _block_scales(sa_row, m_ok, it * NB + j, sf_cols)
            # Two exact power-of-two multiplies and one fp32 rounding, as the reference's accumulation.
            acc += (part * sb[:, None]) * sa[None, :]

    tile = (batch * tl.num_programs(1) + pid_m) * tl.num_programs(0) + pid_n
    store_tile(acc, c_ptr + batch * stride_cl, ws_ptr, cnt_ptr, offs_n, offs_m, n_ok, m_ok, stride_cn, stride_cm,
                tile, pid_k, SPLIT_K, BLOCK_N, BLOCK_M)
