"""sm90-w4a16's and sm120-w4a16's kernel: bf16 activations x NVFP4 / MXFP4 weights -> bf16, exact, fp32
accumulation. On Hopper the dot is wgmma; compiled for sm_120a (no wgmma there) it is mma.sync
(HMMA.16816.F32.BF16), the same dequantizing mainloop with its own tile classes (`SM120_TILES`).

C^T = B A^T: the dequantized weight tile is wgmma's register-sourced A operand and the activations come from
shared memory, so the decoded weights never go back through shared memory.
  * Each K step loads the packed weight as int32 words (cp.async, pipelined) and decodes every byte into one
    bf16x2 register with integer operations, 7 instructions a byte (element 0 in the low nibble): prmt picks
    the byte; t = b * 0x40040 puts both nibbles' exponent and mantissa bits where bf16 wants them (value =
    e2m1 * 2^-126); (b & 0x88) * 0x1001000 places the two sign bits; one and merges; two bf16x2 multiplies
    apply 2^126 and the block scale. Every product is exact: e2m1 x scale has at most 6 significant bits and
    stays in bf16's range, subnormals included (e8m0 code 0 = 2^-127 is the bf16 subnormal 0x0040, 255 NaN;
    e4m3 scales, zero and subnormal included, convert exactly e4m3 -> f16 -> f32 -> bf16).
  * MXFP4 scale bits can be built a word (four codes) at a time (`word_scales`): fewer instructions on the
    small-M tiles, more registers on the 8-warp ones, so it is a per-configuration option.
  * Split-K: each split stores an fp32 partial; the last program to arrive adds them in split order
    (deterministic) and writes C (fp4_triton.common.store_tile).
  * Registers are not capped: maxnreg=128 (two 8-warp programs per SM) gave wrong NVFP4 results with
    64-deep K steps on the H200 and was not faster.
Configuration: the tuned table, else `heuristic_config` by M class (measurements: .notes/hopper.md).
Constraints: K a multiple of the format's block size; any M, N and L >= 1; A K-major (the generator's layout).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...arch import sm_count
from ...codecs import as_bytes
from ...layouts import ceil_div
from ...problem import Shape
from .common import scale_value, store_tile
from .launch import WORKSPACES, scale_words

# $2 word, $3 prmt selector (0x4440 + byte), $4 scale as bf16x2 -> ($0, $1) the byte's two values in bf16.
_DECODE_BYTE_PTX = tl.constexpr("""
{
.reg .b32 x, t, y, r, c;
prmt.b32 x, $2, 0, $3;
mul.lo.u32 t, x, 0x40040;
and.b32 y, x, 0x88;
mul.lo.u32 y, y, 0x1001000;
or.b32 r, t, y;
and.b32 r, r, 0x81C081C0;
mov.b32 c, 0x7E807E80;
mul.rn.bf16x2 r, r, c;
mul.rn.bf16x2 r, r, $4;
mov.b32 {$0, $1}, r;
}
""")

# e4m3 code (low byte of $1) -> bf16x2 (both halves) of the scale, exact (e4m3 -> f16 -> f32 -> bf16).
_E4M3_BF16X2_PTX = tl.constexpr("""
{
.reg .b16 c16, lo, hi;
.reg .b32 h2;
.reg .f32 f;
cvt.u16.u32 c16, $1;
cvt.rn.f16x2.e4m3x2 h2, c16;
mov.b32 {lo, hi}, h2;
cvt.f32.f16 f, lo;
cvt.rn.bf16x2.f32 $0, f, f;
}
""")

_PRMT_PTX = tl.constexpr("prmt.b32 $0, $1, $2, $3;")


@triton.jit
def _mx_scale_bits_word(sw, sbyte, USE_ASM: tl.constexpr):
    """e8m0 codes, four to a word (sw [R, 1]) -> bf16x2 scale bits of byte sbyte ([1, NB]) -> [R, NB].

    bf16 bits of 2^(c - 127) are c << 7: low byte (c & 1) << 7, high byte c >> 1; code 0 (2^-127, subnormal
    0x0040) and 255 (NaN, 0x7FC0) both need bit 6 of the low byte. Built once per word, then one prmt per
    scale picks (low, high, low, high)."""
    hi = (sw >> 1) & 0x7F7F7F7F
    lo = (sw << 7) & -2139062144                                   # 0x80808080
    z0 = ~(((sw & 0x7F7F7F7F) + 0x7F7F7F7F) | sw)                  # bit 7 of each byte: byte == 0
    nsw = ~sw
    z1 = ~(((nsw & 0x7F7F7F7F) + 0x7F7F7F7F) | nsw)                # byte == 255
    lo = lo | (((z0 | z1) >> 1) & 0x40404040)
    if USE_ASM:
        sel = sbyte | (sbyte << 8) | ((sbyte + 4) << 4) | ((sbyte + 4) << 12)
        g = tl.inline_asm_elementwise(_PRMT_PTX, "=r,r,r,r", [lo, hi, sel], dtype=tl.int32, is_pure=True, pack=1)
    else:
        g = ((lo >> (8 * sbyte)) & 0xFF) | (((hi >> (8 * sbyte)) & 0xFF) << 8)
        g = g | (g << 16)
    return g


@triton.jit
def _scale_bits(code, E8M0: tl.constexpr, USE_ASM: tl.constexpr):
    """int32 scale codes -> the exact scale as bf16x2 bits (the same value in both halves)."""
    if E8M0:
        g = code * 0x00800080
        g = tl.where(code == 0, 0x00400040, g)         # 2^-127: a bf16 subnormal
        g = tl.where(code == 255, 0x7FC07FC0, g)       # NaN
    elif USE_ASM:
        g = tl.inline_asm_elementwise(_E4M3_BF16X2_PTX, "=r,r", [code], dtype=tl.int32, is_pure=True, pack=1)
    else:
        # exact in bf16: the low half of the fp32 bits is zero
        bits = scale_value(code, False).to(tl.int32, bitcast=True)
        g = ((bits >> 16) & 0xFFFF) | (bits & -65536)
    return g


@triton.jit
def _decode_bytes(wb, sel, g, USE_ASM: tl.constexpr):
    """Elementwise: byte (sel & 3) of word wb, scale g (bf16x2 bits) -> (low, high) nibble values.

    bf16 with USE_ASM; without it (Triton's CPU interpreter) the same bit manipulation, exact float32 values."""
    if USE_ASM:
        lo, hi = tl.inline_asm_elementwise(_DECODE_BYTE_PTX, "=h,=h,r,r,r", [wb, sel, g],
                                           dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=1)
    else:
        x = (wb >> ((sel & 3) * 8)) & 255
        r = ((x * 0x40040) | ((x & 0x88) * 0x1001000)) & -2118090304   # 0x81C081C0
        gf = (g & -65536).to(tl.float32, bitcast=True)
        lo = ((r << 16).to(tl.float32, bitcast=True) * 8.507059173023462e37) * gf     # 2^126
        hi = ((r & -65536).to(tl.float32, bitcast=True) * 8.507059173023462e37) * gf
    return lo, hi


@triton.jit
def _scale_word_byte(it, blk, NB: tl.constexpr):
    """Word (in units of 128 words from the row's first) and byte of scale column it * NB + blk."""
    if NB >= 4:
        return it * (NB // 4) + blk // 4, blk % 4
    else:
        return (it * NB) // 4, (it * NB) % 4 + blk


@triton.jit
def w4a16_kernel(a_ptr, w_ptr, s_ptr, c_ptr, ws_ptr, cnt_ptr,
                 M, N, K, SPLIT_K,
                 stride_am, stride_al, stride_wn, stride_wl, stride_sl, stride_cm, stride_cn, stride_cl,
                 E8M0: tl.constexpr, SF_BLOCK: tl.constexpr, EVEN_K: tl.constexpr, EVEN_M: tl.constexpr,
                 EVEN_N: tl.constexpr, USE_ASM: tl.constexpr, WORD_SCALES: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    KW: tl.constexpr = BLOCK_K // 8          # int32 words of packed weights per row per K step
    NB: tl.constexpr = BLOCK_K // SF_BLOCK    # scales per row per K step
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_kl = tl.program_id(2)
    pid_k = pid_kl % SPLIT_K
    batch = pid_kl // SPLIT_K
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n_ok = offs_n < N
    m_ok = offs_m < M
    k_iters = tl.cdiv(K, BLOCK_K)
    it_begin = pid_k * k_iters // SPLIT_K
    it_end = (pid_k + 1) * k_iters // SPLIT_K
    # A provably positive trip count: no wgmma serialization (ptxas C7515) for an empty-loop path.
    tl.assume(it_begin >= 0)
    tl.assume(it_end > it_begin)
    sf_cols = K // SF_BLOCK
    sf_col_tiles = tl.cdiv(sf_cols, 4)
    if EVEN_N:
        offs_n_ld = offs_n
    else:
        offs_n_ld = tl.minimum(offs_n, N - 1)     # rows past N read row N - 1 (never stored): unmasked loads
    offs_m_ld = tl.minimum(offs_m, M - 1)

    w_rows = w_ptr + batch * stride_wl + offs_n_ld * stride_wn
    # Blocked 128x4 scale layout, in 4-byte words: the four scales of columns 4g..4g+3 are one word.
    s_rows = (s_ptr + batch * stride_sl + (offs_n_ld // 128) * sf_col_tiles * 128 + (offs_n_ld % 32) * 4
              + (offs_n_ld // 32) % 4)
    a_rows = a_ptr + batch * stride_al + offs_m_ld * stride_am
    # MX with at most one scale word per row per K step: scale bits built word-wise.
    SCALE_WORD: tl.constexpr = WORD_SCALES and E8M0 and (NB <= 4) and EVEN_K
    sel = (0x4440 + tl.arange(0, 4))[None, None, :]
    blk = tl.arange(0, NB)[None, :]
    ka_step = tl.arange(0, BLOCK_K)
    w_base = w_rows[:, None] + tl.arange(0, KW)[None, :]

    acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    for it in range(it_begin, it_end):
        if EVEN_K:
            words = tl.load(w_base + it * KW)
        else:
            words = tl.load(w_base + it * KW, mask=((it * KW + tl.arange(0, KW)) * 8 < K)[None, :], other=0)
        sword, sbyte = _scale_word_byte(it, blk, NB)
        if SCALE_WORD:
            sw = tl.load(s_rows + ((it * NB) // 4) * 128)
            g = _mx_scale_bits_word(sw[:, None], sbyte, USE_ASM)
        else:
            if EVEN_K:
                sw = tl.load(s_rows[:, None] + sword * 128)
            else:
                sw = tl.load(s_rows[:, None] + sword * 128, mask=it * NB + blk < sf_cols, other=0)
            g = _scale_bits((sw >> (sbyte * 8)) & 255, E8M0, USE_ASM)
        WPB: tl.constexpr = SF_BLOCK // 8
        gb = tl.reshape(tl.broadcast_to(g[:, :, None, None], (BLOCK_N, NB, WPB, 4)), (BLOCK_N, KW, 4))
        wb = tl.broadcast_to(words[:, :, None], (BLOCK_N, KW, 4))
        lo, hi = _decode_bytes(wb, sel, gb, USE_ASM)
        wt = tl.reshape(tl.join(lo, hi), (BLOCK_N, BLOCK_K))
        ka = it * BLOCK_K + ka_step
        if EVEN_K and EVEN_M:
            at = tl.load(a_rows[:, None] + ka[None, :])
        elif EVEN_K:
            at = tl.load(a_rows[:, None] + ka[None, :], mask=m_ok[:, None], other=0.0)
        else:
            at = tl.load(a_rows[:, None] + ka[None, :], mask=m_ok[:, None] & (ka < K)[None, :], other=0.0)
        if USE_ASM:
            acc = tl.dot(wt, tl.trans(at), acc)
        else:
            acc = tl.dot(wt, tl.trans(at.to(tl.float32)), acc, input_precision="ieee")

    tile = (batch * tl.num_programs(1) + pid_m) * tl.num_programs(0) + pid_n
    store_tile(acc, c_ptr + batch * stride_cl, ws_ptr, cnt_ptr, offs_n, offs_m, n_ok, m_ok, stride_cn, stride_cm,
               tile, pid_k, SPLIT_K, BLOCK_N, BLOCK_M)


# ---------------------------------------------------------------------------------------------------------
# Host side
# ---------------------------------------------------------------------------------------------------------
# Tile classes, from cold-L2 sweeps on an H200 (.notes/hopper.md); per_sm is the split-K fill target.
DECODE = dict(block_n=128, block_m=16, block_k=128, num_warps=4, num_stages=3, word_scales=True)
MID = dict(block_n=128, block_m=64, block_k=128, num_warps=8, num_stages=4, word_scales=False)
LARGE_LONG_K = dict(block_n=128, block_m=128, block_k=64, num_warps=4, num_stages=3, word_scales=False)
LARGE = dict(block_n=64, block_m=128, block_k=128, num_warps=4, num_stages=3, word_scales=False)
# sm_120 (mma.sync, 99 KB of shared memory per program): the large tiles on 8 warps, which ptxas compiles for
# sm_120a without spilling (the 4-warp Hopper ones spill there); decode and mid as on Hopper. Untimed.
SM120_LARGE_LONG_K = dict(block_n=128, block_m=128, block_k=64, num_warps=8, num_stages=4, word_scales=False)
SM120_LARGE = dict(block_n=64, block_m=128, block_k=128, num_warps=8, num_stages=3, word_scales=False)
PER_SM = {id(DECODE): 3, id(MID): 3, id(LARGE_LONG_K): 2, id(LARGE): 2, id(SM120_LARGE_LONG_K): 2,
          id(SM120_LARGE): 2}
# (decode, mid, large with long K, large) per target family.
HOPPER_TILES = (DECODE, MID, LARGE_LONG_K, LARGE)
SM120_TILES = (DECODE, MID, SM120_LARGE_LONG_K, SM120_LARGE)
# The interpreter runs each program in numpy: small tiles, and still two splits.
CPU_CONFIG = dict(block_n=32, block_m=16, block_k=64, num_warps=4, num_stages=1, word_scales=True, split_k=2)


def tile_class(shape: Shape, tiles: tuple[dict, ...] = HOPPER_TILES) -> dict:
    """M <= 16: 128 x 16 tiles (decode); M <= 64: 128 x 64; larger M: 128 x 128 with 64-deep K steps for
    K >= 8192, else 64 x 128 with 128-deep K steps."""
    decode, mid, large_long_k, large = tiles
    if shape.m <= 16:
        return decode
    if shape.m <= 64:
        return mid
    return large_long_k if shape.k >= 8192 else large


def split_for(cfg: dict, shape: Shape, sm_count: int, per_sm: int = 2) -> int:
    """Split count: wave efficiency at `per_sm` programs per SM, minus a small price per split and a price for
    the fp32 partial tiles each split writes and the last program reads back (relative to the weight bytes
    of the tile); at least 4 K steps per split."""
    bn, bm, bk = cfg["block_n"], cfg["block_m"], cfg["block_k"]
    k = shape.k
    tiles = ceil_div(shape.n, bn) * ceil_div(shape.m, bm) * shape.l
    k_iters = ceil_div(k, bk)
    slots = sm_count * per_sm
    partial_ratio = 16.0 * bm / k           # (2 * 4 * bn * bm partial bytes) / (bn * k / 2 weight bytes)
    best, best_score = 1, -1e9
    for split in range(1, max(1, min(32, k_iters // 4)) + 1):
        ctas = tiles * split
        eff = ctas / (ceil_div(ctas, slots) * slots)
        score = eff - 0.004 * split - 0.25 * partial_ratio * split
        if score > best_score + 1e-9:
            best, best_score = split, score
    return best


def candidates(shape: Shape, device: torch.device, tiles: tuple[dict, ...] = HOPPER_TILES) -> tuple[dict, ...]:
    """The heuristic's configuration first, then the other tile classes of `tiles` (split-K fitted to each)."""
    if device.type != "cuda":
        return (dict(CPU_CONFIG),)
    sms = sm_count(device)
    first = tile_class(shape, tiles)
    ordered = [first] + [c for c in tiles if c is not first]
    return tuple({**c, "split_k": split_for(c, shape, sms, PER_SM[id(c)])} for c in ordered)


def prepare_w4a16(data: tuple, shape: Shape, e8m0: bool, block: int, config: dict, interpret: bool):
    """The launch of one configuration for this shape; returns a callable data -> C (written in place)."""
    bn, bm, bk = config["block_n"], config["block_m"], config["block_k"]
    if bk % block:
        raise ValueError(f"block_k {bk} must be a multiple of the scale block {block}")
    m, n, k, l = shape.m, shape.n, shape.k, shape.l
    grid_n, grid_m = ceil_div(n, bn), ceil_div(m, bm)
    split = max(1, min(int(config["split_k"]), ceil_div(k, bk)))
    device = data[6].device
    ws, cnt = WORKSPACES.get(device, grid_n * grid_m * l, split, bn * bm)
    grid = (grid_n, grid_m, split * l)
    meta = dict(E8M0=e8m0, SF_BLOCK=block, EVEN_K=(k % bk == 0), EVEN_M=(m % bm == 0), EVEN_N=(n % bn == 0),
                USE_ASM=not interpret, WORD_SCALES=bool(config["word_scales"]), BLOCK_N=bn, BLOCK_M=bm, BLOCK_K=bk,
                num_warps=config["num_warps"], num_stages=config["num_stages"])

    def run(data: tuple) -> torch.Tensor:
        a, b, sfb_perm, c = data[0], data[1], data[5], data[6]
        # Packed weights as int32 words along K: [N, K/8, L] over the same bytes (K is a multiple of 16).
        w = as_bytes(b).permute(2, 0, 1).view(torch.int32).permute(1, 2, 0)
        s = scale_words(sfb_perm)
        w4a16_kernel[grid](a, w, s, c, ws, cnt, m, n, k, split, a.stride(0), a.stride(2), w.stride(0), w.stride(2),
                           s.stride(0), c.stride(0), c.stride(1), c.stride(2), **meta)
        return c

    return run
