"""`triton-dot-scaled`: a Triton GEMM on `tl.dot_scaled` over a fixed set of tiles (a baseline).

Formats: those whose scales are e8m0 with 32 values per scale, which every Triton with `tl.dot_scaled`
takes: MXFP4 (e2m1 x e2m1), W4A8 (e4m3 x e2m1), MXFP8 (e4m3 x e4m3) and W4A16-MXFP4 (bf16 x e2m1, A unscaled). NVFP4 (e4m3 scales,
16 values per scale) is left out: Triton 3.6, the version on the project's GPU machine, rejects it in
`dot_scaled`. GPUs without native microscaled MMA (Hopper) run it emulated: Triton upcasts to bf16 in
registers, so this is the "what a good compiler gives you today" reference, not a tensor-core FP4 path.

Reads the row-major scales (data[2], data[3]) and any strides, so the competition's [rows, cols, L] views
go in as they are; masks make any M and N legal (K is a multiple of 32 by the format). The tile comes from the
GPU model's tuned table (`fp4bench tune`), else the heuristic: the first candidate, 64x64x256 with 4 stages,
which fits every format's shared memory (128-row tiles of a bf16 A with 4 stages need 287 KB, more than an
H200 has) and was the fastest or near it at every M on an H200; nothing is timed at run time. Under TRITON_INTERPRET=1 it runs on the CPU
with one small tile (for tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..codecs import as_bytes
from ..problem import Problem
from .base import Kernel, RunFn, triton_interpreting

INTERPRET = triton_interpreting()
MX_BLOCK = 32
# Per GEMM format: the A operand's dot_scaled format, whether it carries scales, and B's format.
OPERANDS = {"mxfp4": ("e2m1", True, "e2m1"), "w4a8": ("e4m3", True, "e2m1"), "mxfp8": ("e4m3", True, "e4m3"),
            "w4a16-mxfp4": ("bf16", False, "e2m1")}

# (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps): small-M and large-M tiles, both K depths; the first is the
# heuristic's choice.
GPU_TILES = (
    (64, 64, 256, 4, 4), (64, 128, 256, 4, 4), (64, 256, 128, 3, 4), (128, 64, 256, 4, 4),
    (128, 128, 128, 3, 4), (128, 128, 256, 3, 8), (128, 256, 128, 3, 8), (128, 128, 128, 4, 8),
)
INTERPRETER_TILES = ((64, 64, 128, 1, 4),)


TILE_KEYS = ("block_m", "block_n", "block_k", "num_stages", "num_warps")


@triton.jit
def _dot_scaled_gemm(a_ptr, b_ptr, sa_ptr, sb_ptr, c_ptr, M, N, K,
                     s_am, s_ak, s_al, s_bn, s_bk, s_bl, s_sam, s_sak, s_sal, s_sbn, s_sbk, s_sbl,
                     s_cm, s_cn, s_cl,
                     A_FORMAT: tl.constexpr, A_SCALED: tl.constexpr, B_FORMAT: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    A_PER_BYTE: tl.constexpr = 2 if A_FORMAT == "e2m1" else 1
    B_PER_BYTE: tl.constexpr = 2 if B_FORMAT == "e2m1" else 1
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    batch = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_ak = tl.arange(0, BLOCK_K // A_PER_BYTE)
    offs_bk = tl.arange(0, BLOCK_K // B_PER_BYTE)
    offs_sk = tl.arange(0, BLOCK_K // 32)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_base = a_ptr + batch * s_al + offs_m[:, None] * s_am
    b_base = b_ptr + batch * s_bl + offs_n[None, :] * s_bn
    sa_base = sa_ptr + batch * s_sal + offs_m[:, None] * s_sam
    sb_base = sb_ptr + batch * s_sbl + offs_n[:, None] * s_sbn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ak = k0 // A_PER_BYTE + offs_ak
        bk = k0 // B_PER_BYTE + offs_bk
        sk = k0 // 32 + offs_sk
        a = tl.load(a_base + ak[None, :] * s_ak, mask=mask_m[:, None] & (ak[None, :] < K // A_PER_BYTE), other=0)
        b = tl.load(b_base + bk[:, None] * s_bk, mask=(bk[:, None] < K // B_PER_BYTE) & mask_n[None, :], other=0)
        sb = tl.load(sb_base + sk[None, :] * s_sbk, mask=mask_n[:, None] & (sk[None, :] < K // 32), other=0)
        if A_SCALED:
            sa = tl.load(sa_base + sk[None, :] * s_sak, mask=mask_m[:, None] & (sk[None, :] < K // 32), other=0)
            acc = tl.dot_scaled(a, sa, A_FORMAT, b, sb, B_FORMAT, acc)
        else:
            acc = tl.dot_scaled(a, None, A_FORMAT, b, sb, B_FORMAT, acc)
    c_ptrs = c_ptr + batch * s_cl + offs_m[:, None] * s_cm + offs_n[None, :] * s_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


class TritonDotScaled(Kernel):
    name = "triton-dot-scaled"
    formats = tuple(OPERANDS)
    devices = ("cpu", "cuda") if INTERPRET else ("cuda",)
    role = "baseline"
    description = "Triton tl.dot_scaled GEMM, fixed tiles (MX formats; emulated on Hopper)"

    def tuning_candidates(self, problem: Problem) -> tuple[dict, ...]:
        tiles = INTERPRETER_TILES if problem.device.type == "cpu" else GPU_TILES
        return tuple(dict(zip(TILE_KEYS, t)) for t in tiles)

    def prepare(self, problem: Problem) -> RunFn:
        return self.prepare_config(problem, self.chosen_config(problem)[0])

    def prepare_config(self, problem: Problem, config: dict) -> RunFn:
        a_format, a_scaled, b_format = OPERANDS[problem.fmt.name]
        s = problem.shape
        m, n, k, l = s.m, s.n, s.k, s.l
        tile = {key: int(config[key]) for key in TILE_KEYS}
        grid = (triton.cdiv(m, tile["block_m"]), triton.cdiv(n, tile["block_n"]), l)

        def run(data: tuple) -> torch.Tensor:
            a, b, sfa, sfb, c = data[0], data[1], data[2], data[3], data[6]
            # fp4/fp8/e8m0 storage goes in as uint8 (same strides); a dense bf16 A (W4A16) as it is.
            a8 = as_bytes(a) if a.element_size() == 1 else a
            b8, sb8 = as_bytes(b), as_bytes(sfb)
            # With an unscaled A, B's scales stand in as a dummy pointer that the kernel never reads.
            sa8 = as_bytes(sfa) if a_scaled else sb8
            _dot_scaled_gemm[grid](a8, b8, sa8, sb8, c, m, n, k, *a8.stride(), *b8.stride(), *sa8.stride(),
                                   *sb8.stride(), *c.stride(), A_FORMAT=a_format, A_SCALED=a_scaled,
                                   B_FORMAT=b_format,
                                   BLOCK_M=tile["block_m"], BLOCK_N=tile["block_n"], BLOCK_K=tile["block_k"],
                                   num_stages=tile["num_stages"], num_warps=tile["num_warps"])
            return c

        return run


KERNELS = (TritonDotScaled(),)
