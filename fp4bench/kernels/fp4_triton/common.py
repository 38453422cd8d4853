"""Shared @triton.jit device functions of the FP4 Triton GEMMs: e2m1 and scale decoding, blocked-scale
loads, the split-K tile bookkeeping and the split-K reduction. Design and layout facts: .notes/hopper.md.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def e2m1_value(nibble):
    """int32 e2m1 codes (0..15) -> exact float32 values, by integer arithmetic (portable, interpreter-safe)."""
    mag = nibble & 7
    exp = mag >> 1
    man = mag & 1
    # value * 4: (2 + m) << e for normal codes, 2 * m for the subnormal 0.5.
    quarters = tl.where(exp > 0, (2 + man) << exp, man << 1)
    value = quarters.to(tl.float32) * 0.25
    return tl.where(nibble >= 8, -value, value)


@triton.jit
def scale_value(code, E8M0: tl.constexpr):
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


def e2m1_word_to_f16x2_ptx(word: str, outs: tuple[str, str, str, str]) -> str:
    """PTX lines: the eight e2m1 nibbles of the 32-bit register `word`, each made the e4m3 byte s<<7 | m<<2
    (value e2m1 / 64), converted to four f16x2 registers `outs` (the low nibbles of bytes 0-1 and 2-3, then
    the high nibbles likewise; the lower byte in the lower half). The instance declares .b32 t, u, lo, hi and
    .b16 l0, l1, h0, h1."""
    o0, o1, o2, o3 = outs
    return (f"shl.b32 t, {word}, 2;\nand.b32 t, t, 0x1C1C1C1C;\nshl.b32 u, {word}, 4;\nand.b32 u, u, 0x80808080;\n"
            f"or.b32 lo, t, u;\nshr.b32 t, {word}, 2;\nand.b32 t, t, 0x1C1C1C1C;\nand.b32 u, {word}, 0x80808080;\n"
            f"or.b32 hi, t, u;\nmov.b32 {{l0, l1}}, lo;\nmov.b32 {{h0, h1}}, hi;\n"
            f"cvt.rn.f16x2.e4m3x2 {o0}, l0;\ncvt.rn.f16x2.e4m3x2 {o1}, l1;\n"
            f"cvt.rn.f16x2.e4m3x2 {o2}, h0;\ncvt.rn.f16x2.e4m3x2 {o3}, h1;\n")


# Four packed bytes (eight e2m1 values) per PTX instance. A nibble s|m becomes the e4m3 byte s<<7 | m<<2,
# whose value is exactly e2m1 / 64; cvt turns byte pairs into f16x2, and one f16x2 multiply by (scale * 64)
# gives e2m1 * scale, exact in fp16 (|scale * 64| <= 448 * 64 < 65504). Outputs: $0,$1 the low nibbles of
# bytes 0..3, $2,$3 the high nibbles; inputs: $4 the bytes, $5,$6 the four (scale * 64) values as f16x2.
_DECODE_SCALED_F16_PTX = tl.constexpr("""
{
.reg .b32 t, u, lo, hi;
.reg .b16 l0, l1, h0, h1;
""" + e2m1_word_to_f16x2_ptx("$4", ("$0", "$1", "$2", "$3")) + """mul.rn.f16x2 $0, $0, $5;
mul.rn.f16x2 $1, $1, $6;
mul.rn.f16x2 $2, $2, $5;
mul.rn.f16x2 $3, $3, $6;
}
""")


@triton.jit
def decode_pair(packed, scale, OUT_DTYPE: tl.constexpr, USE_ASM: tl.constexpr):
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
        lo = (e2m1_value(codes & 15) * scale).to(OUT_DTYPE)
        hi = (e2m1_value(codes >> 4) * scale).to(OUT_DTYPE)
    return lo, hi


@triton.jit
def scale_row_words(rows, n_col_tiles):
    """Blocked-layout offset, in 4-byte words, of scale (row, column 0) for each row.

    The four scales of columns 4g..4g+3 of one row are one little-endian word, at row word + g * 128: loading
    words (not bytes) lets Triton pipeline the scale loads with cp.async like the element loads."""
    return (rows // 128) * n_col_tiles * 128 + (rows % 32) * 4 + (rows // 32) % 4


@triton.jit
def load_scale_words(sf_row, row_ok, it, sf_cols, NB: tl.constexpr):
    """The blocked-layout words (four scale bytes each) of K tile `it`, [R, NB // 4] int32, 0 outside the matrix."""
    NW: tl.constexpr = NB // 4
    group = it * NW + tl.arange(0, NW)
    return tl.load(sf_row[:, None] + (group * 128)[None, :], mask=row_ok[:, None] & (group * 4 < sf_cols)[None, :],
                   other=0)


@triton.jit
def scale_codes(words, row_ok, it, sf_cols, R: tl.constexpr, NB: tl.constexpr):
    """Words of K tile `it` (load_scale_words) -> int32 codes [R, NB] (0 outside the matrix, layout padding
    included) and their validity mask."""
    shifts = tl.arange(0, 4) * 8
    codes = tl.reshape((words[:, :, None] >> shifts[None, None, :]) & 255, (R, NB))
    col = it * NB + tl.arange(0, NB)
    valid = row_ok[:, None] & (col < sf_cols)[None, :]
    return tl.where(valid, codes, 0), valid


@triton.jit
def load_scale_codes(sf_row, row_ok, it, sf_cols, R: tl.constexpr, NB: tl.constexpr):
    """Scale bytes of K tile `it` as int32 codes [R, NB] (0 outside the matrix) and their validity mask."""
    return scale_codes(load_scale_words(sf_row, row_ok, it, sf_cols, NB), row_ok, it, sf_cols, R, NB)


@triton.jit
def per_byte(values, R: tl.constexpr, NB: tl.constexpr, PER: tl.constexpr):
    """[R, NB] per-block values -> [R, NB * PER] (each block's value repeated for its PER packed bytes)."""
    return tl.reshape(tl.broadcast_to(values[:, :, None], (R, NB, PER)), (R, NB * PER))


@triton.jit
def load_fp4_tile(base, row_ok, sf_row, it, sf_cols, kb, k_ok, stride_k,
                   R: tl.constexpr, NB: tl.constexpr, PER: tl.constexpr, E8M0: tl.constexpr,
                   OUT_DTYPE: tl.constexpr, USE_ASM: tl.constexpr):
    """One K tile of a packed fp4 operand, dequantized: (low nibbles, high nibbles), each [R, BLOCK_K // 2]."""
    packed = tl.load(base + kb[None, :] * stride_k, mask=row_ok[:, None] & k_ok[None, :], other=0)
    codes, _ = load_scale_codes(sf_row, row_ok, it, sf_cols, R, NB)
    scale = per_byte(scale_value(codes, E8M0), R, NB, PER)
    return decode_pair(packed, scale, OUT_DTYPE, USE_ASM)


@triton.jit
def store_tile(acc, c_ptr, ws_ptr, cnt_ptr, offs_n, offs_m, n_ok, m_ok, stride_cn, stride_cm, tile, pid_k,
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
def split_k_tile(M, N, K, SPLIT_K, SF_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
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


@triton.jit
def dot_k_tile(acc, b_lo, b_hi, a_lo, a_hi, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
               JOIN_K: tl.constexpr):
    """acc + B_tile · A_tileᵀ for one K tile of two fp16-decoded fp4 operands given as nibble halves.

    Each half is [rows, BLOCK_K // 2] (even and odd K). JOIN_K interleaves them back for one dot (one wgmma wait
    instead of two); either way both operands see the same permutation of K."""
    if JOIN_K:
        b_k = tl.reshape(tl.join(b_lo, b_hi), (BLOCK_N, BLOCK_K))
        a_k = tl.reshape(tl.join(a_lo, a_hi), (BLOCK_M, BLOCK_K))
        acc = tl.dot(b_k, tl.trans(a_k), acc)
    else:
        acc = tl.dot(b_lo, tl.trans(a_lo), acc)
        acc = tl.dot(b_hi, tl.trans(a_hi), acc)
    return acc
