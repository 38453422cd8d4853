"""sm90-group-gemm's kernel: the competition's NVFP4 grouped GEMM, c_g = A_g · B_gᵀ for every group, one launch.

One program per output tile of any group. The host lays the tiles of all groups out once per set of group
sizes (the schedule: group, N tile, M tile per program, a device array cached by sizes and tile shape) and
writes each group's addresses, sizes and strides into a device table, cached by the addresses, sizes and
strides themselves (never by values: a table is only pointers, so a hit is always right). M, N and K differ
per group: rows and columns outside a group's matrix are masked, so an M that is not a multiple of the tile
is fine. Math as gemm.py: tiles computed transposed (C^T = B A^T), both operands decoded exactly to fp16 in
registers (e2m1 x e4m3), fp16 wgmma with fp32 accumulation, fp16 out. No split-K: the benchmark cases have
hundreds of tiles.

Inputs: the competition's tuple ([(a, b, c)], [(sfa, sfb)], [(sfa_permuted, sfb_permuted)], [(m, n, k, l)]);
a [m, k // 2, 1] and b [n, k // 2, 1] packed e2m1, K-major; scales read from the blocked bytes behind the
permuted views (on the GPU; the row-major sfa, sfb are left alone, they live on the CPU); each c [m, n, 1]
fp16, every element written. Returns the list of c. Constraints: NVFP4 only; L = 1 per group (the
competition's); each k a multiple of 32 and a, b at 16-byte aligned addresses (the kernel's alignment hints,
checked on the host: the competition's k are multiples of 64). A cache miss copies a small table to the
device, so the callable is not CUDA-graph safe. Module interface: as gemv.py.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...codecs import as_bytes
from ...layouts import ceil_div
from .common import dot_k_tile, load_fp4_tile, scale_row_words
from .launch import checked_params, scale_words

DEFAULTS = dict(block_n=128, block_m=64, block_k=128, num_warps=8, num_stages=3, join_k=True)
GPU_CANDIDATES = (
    DEFAULTS,
    dict(DEFAULTS, block_m=128),
    dict(DEFAULTS, num_stages=2),
    dict(DEFAULTS, join_k=False),
    dict(DEFAULTS, block_n=64, num_warps=4),
)
CPU_CONFIG = dict(DEFAULTS, block_n=32, block_m=32, block_k=64, num_warps=4, num_stages=1)

# A group's row in the device table, int64 each: the addresses of a, b, c, sfa's and sfb's blocked words, then
# m, n, k, a's and b's row strides (bytes), c's row and column strides (elements).
TABLE_COLS = tl.constexpr(12)
# Pointer tables kept per kernel process (each a few hundred bytes); the oldest goes first.
MAX_CACHED_TABLES = 64


@triton.jit
def fp4_group_gemm_kernel(
        table_ptr, schedule_ptr,
        USE_ASM: tl.constexpr, JOIN_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
        BLOCK_K: tl.constexpr):
    HALF: tl.constexpr = BLOCK_K // 2
    NB: tl.constexpr = BLOCK_K // 16
    PER: tl.constexpr = 8
    tile = tl.program_id(0)
    group = tl.load(schedule_ptr + 3 * tile)
    pid_n = tl.load(schedule_ptr + 3 * tile + 1)
    pid_m = tl.load(schedule_ptr + 3 * tile + 2)
    row = table_ptr + group * TABLE_COLS
    # Alignment hints (checked on the host, `_Tables.groups`): without them the packed tiles are loaded a byte
    # at a time and not pipelined.
    a_ptr = tl.multiple_of(tl.load(row + 0).to(tl.pointer_type(tl.uint8)), 16)
    b_ptr = tl.multiple_of(tl.load(row + 1).to(tl.pointer_type(tl.uint8)), 16)
    c_ptr = tl.load(row + 2).to(tl.pointer_type(tl.float16))
    sa_ptr = tl.load(row + 3).to(tl.pointer_type(tl.int32))
    sb_ptr = tl.load(row + 4).to(tl.pointer_type(tl.int32))
    M = tl.load(row + 5).to(tl.int32)
    N = tl.load(row + 6).to(tl.int32)
    K = tl.load(row + 7).to(tl.int32)
    stride_am = tl.multiple_of(tl.load(row + 8), 16)
    stride_bn = tl.multiple_of(tl.load(row + 9), 16)
    stride_cm = tl.load(row + 10)
    stride_cn = tl.load(row + 11)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n_ok = offs_n < N
    m_ok = offs_m < M
    half_k = tl.multiple_of(K // 2, 16)
    sf_cols = K // 16
    sf_col_tiles = tl.cdiv(sf_cols, 4)
    b_base = b_ptr + offs_n[:, None] * stride_bn
    sb_row = sb_ptr + scale_row_words(offs_n, sf_col_tiles)
    a_base = a_ptr + offs_m[:, None] * stride_am
    sa_row = sa_ptr + scale_row_words(offs_m, sf_col_tiles)
    acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
    for it in range(0, tl.cdiv(K, BLOCK_K)):
        kb = it * HALF + tl.arange(0, HALF)
        k_ok = kb < half_k
        a_lo, a_hi = load_fp4_tile(a_base, m_ok, sa_row, it, sf_cols, kb, k_ok, 1,
                                   BLOCK_M, NB, PER, False, tl.float16, USE_ASM)
        b_lo, b_hi = load_fp4_tile(b_base, n_ok, sb_row, it, sf_cols, kb, k_ok, 1,
                                   BLOCK_N, NB, PER, False, tl.float16, USE_ASM)
        acc = dot_k_tile(acc, b_lo, b_hi, a_lo, a_hi, BLOCK_N, BLOCK_M, BLOCK_K, JOIN_K)
    c_ptrs = c_ptr + offs_n[:, None] * stride_cn + offs_m[None, :] * stride_cm
    tl.store(c_ptrs, acc.to(tl.float16), mask=n_ok[:, None] & m_ok[None, :])


def candidates(device: torch.device) -> tuple[dict, ...]:
    return GPU_CANDIDATES if device.type == "cuda" else (CPU_CONFIG,)


def can_implement(data: tuple) -> str | None:
    abc, _, _, sizes = data
    if any(l != 1 for _, _, _, l in sizes):
        return "needs l = 1 in every group (the competition's grouped GEMM)"
    if any(a.stride(1) != 1 or b.stride(1) != 1 for a, b, _ in abc):
        return "needs K-major a and b in every group (packed bytes contiguous along K)"
    return _misalignment(data)


def _misalignment(data: tuple) -> str | None:
    """Why the kernel's alignment hints would not hold for these inputs, or None."""
    for g, ((a, b, _), (_, _, k, _)) in enumerate(zip(data[0], data[3])):
        if k % 32:
            return f"needs every k a multiple of 32 (group {g} has k = {k})"
        if any(t.data_ptr() % 16 or t.stride(0) % 16 for t in (a, b)):
            return f"needs a and b at 16-byte aligned addresses and row strides (group {g})"
    return None


def resolve(data: tuple, config: dict, device: torch.device) -> dict:
    """`config` with every launch parameter filled in (no parameter depends on the sizes)."""
    return checked_params(config, DEFAULTS)


def scratch_output(data: tuple) -> tuple:
    abc = [(a, b, torch.empty_like(c)) for a, b, c in data[0]]
    return (abc,) + tuple(data[1:])


class _Tables:
    """Device-side schedules (per group sizes and tile shape) and group tables (per addresses and strides)."""

    def __init__(self):
        self._schedules: dict[tuple, torch.Tensor] = {}
        self._tables: dict[tuple, torch.Tensor] = {}

    def schedule(self, device: torch.device, sizes: tuple, block_n: int, block_m: int) -> torch.Tensor:
        """[tiles, 3] int32 (group, N tile, M tile), group by group."""
        key = (str(device), sizes, block_n, block_m)
        if key not in self._schedules:
            rows = [(g, pn, pm) for g, (m, n, _, _) in enumerate(sizes)
                    for pm in range(ceil_div(m, block_m)) for pn in range(ceil_div(n, block_n))]
            self._schedules[key] = torch.tensor(rows, dtype=torch.int32).to(device)
        return self._schedules[key]

    def groups(self, data: tuple) -> tuple[torch.Tensor, list]:
        """The [groups, TABLE_COLS] int64 device table, and the tensors it points into (kept alive by the caller)."""
        abc, _, permuted, sizes = data
        reason = _misalignment(data)
        if reason:
            raise ValueError(f"sm90-group-gemm {reason}")
        rows, keep, views = [], [], True
        for (a, b, c), (sfa_perm, sfb_perm), (m, n, k, _) in zip(abc, permuted, sizes):
            a_t, b_t = as_bytes(a), as_bytes(b)
            sfa, sfb = scale_words(sfa_perm), scale_words(sfb_perm)
            # A scale layout that needed a copy gives a fresh address each call: never cache such a table.
            views &= all(w.untyped_storage().data_ptr() == p.untyped_storage().data_ptr()
                         for w, p in ((sfa, sfa_perm), (sfb, sfb_perm)))
            keep += [sfa, sfb]
            rows.append((a_t.data_ptr(), b_t.data_ptr(), c.data_ptr(), sfa.data_ptr(), sfb.data_ptr(), m, n, k,
                         a_t.stride(0), b_t.stride(0), c.stride(0), c.stride(1)))
        key = (str(abc[0][2].device), tuple(rows))
        table = self._tables.get(key)
        if table is None:
            table = torch.tensor(rows, dtype=torch.int64).to(abc[0][2].device)
            if views:
                if len(self._tables) >= MAX_CACHED_TABLES:
                    del self._tables[next(iter(self._tables))]
                self._tables[key] = table
        return table, keep


TABLES = _Tables()


def launch(data: tuple, plan: dict, use_asm: bool) -> list[torch.Tensor]:
    """Compute every group's GEMM into its c in one launch; returns the list of c."""
    abc, _, _, sizes = data
    sizes = tuple(tuple(s) for s in sizes)
    device = abc[0][2].device
    schedule = TABLES.schedule(device, sizes, plan["block_n"], plan["block_m"])
    table, _keep_alive = TABLES.groups(data)
    fp4_group_gemm_kernel[(schedule.shape[0],)](
        table, schedule, USE_ASM=use_asm, JOIN_K=plan["join_k"], BLOCK_N=plan["block_n"],
        BLOCK_M=plan["block_m"], BLOCK_K=plan["block_k"], num_warps=plan["num_warps"],
        num_stages=plan["num_stages"])
    return [c for _, _, c in abc]
