"""Check and time sm90-gemv, sm90-dual-gemm and sm90-group-gemm on the competition's benchmark cases (an H200).

    python scripts/bench_sm90_problems.py [gemv|dual_gemm|group_gemm ...] [--candidates]
For each case: the kernel's output against the exact reference (tests/competition_problems.py), then medians of
triton.testing.do_bench (L2 cleared before each call) for the kernel, for `dequant+mm` (dequantize every operand
with fp4bench.codecs to fp16, then torch.matmul: what a user without the kernel runs) and for `mm` (torch.matmul
on operands dequantized beforehand), and the bytes floor (A, B, scales and C at 4.2 TB/s, the H200's copy rate).
--candidates: also every other tuning candidate of the kernel (checked, then timed; one line each, `cand N`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from triton.testing import do_bench

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from competition_problems import NVFP4, as_problem, check, competition_data, poisoned  # noqa: E402
from fp4bench.codecs import dequantize  # noqa: E402
from fp4bench.kernels import get_kernel  # noqa: E402
from fp4bench.problem import DUAL_GEMM, GEMV, GROUP_GEMM  # noqa: E402

COPY_BYTES_PER_S = 4.2e12
SEED = 1111
BENCHMARKS = {
    GEMV: [dict(m=7168, k=16384, l=1), dict(m=4096, k=7168, l=8), dict(m=7168, k=2048, l=4)],
    DUAL_GEMM: [dict(m=256, n=4096, k=7168, l=1), dict(m=512, n=4096, k=7168, l=1),
                dict(m=256, n=3072, k=4096, l=1), dict(m=512, n=3072, k=7168, l=1)],
    GROUP_GEMM: [dict(m=[80, 176, 128, 72, 64, 248, 96, 160], n=[4096] * 8, k=[7168] * 8, g=8),
                 dict(m=[40, 76, 168, 72, 164, 148, 196, 160], n=[7168] * 8, k=[2048] * 8, g=8),
                 dict(m=[192, 320], n=[3072, 3072], k=[4096, 4096], g=2),
                 dict(m=[128, 384], n=[4096, 4096], k=[1536, 1536], g=2)],
}
KERNEL_NAMES = {GEMV: "sm90-gemv", DUAL_GEMM: "sm90-dual-gemm", GROUP_GEMM: "sm90-group-gemm"}


def _fp16(x, sx) -> torch.Tensor:
    return dequantize(x, sx, NVFP4.a).half()


def _operands(kind: str, data: tuple) -> list[tuple]:
    """Per batch (GEMV) or group: the (packed, row-major scales) pairs of its operands, scales on the GPU."""
    return [tuple(t.to(p[0].device) for t in p) for p in _host_operands(kind, data)]


def _host_operands(kind: str, data: tuple) -> list[tuple]:
    if kind == GEMV:
        a, b, sfa, sfb = data[:4]
        return [(a[:, :, i], sfa[:, :, i], b[:1, :, i], sfb[:1, :, i]) for i in range(a.shape[2])]
    if kind == DUAL_GEMM:
        a, b1, b2, sfa, sfb1, sfb2 = data[:6]
        return [(a[:, :, 0], sfa[:, :, 0], b1[:, :, 0], sfb1[:, :, 0], b2[:, :, 0], sfb2[:, :, 0])]
    return [(a[:, :, 0], sfa[:, :, 0], b[:, :, 0], sfb[:, :, 0]) for (a, b, _), (sfa, sfb) in zip(data[0], data[1])]


def _dense_products(kind: str, dense: list[list[torch.Tensor]]) -> None:
    for ops in dense:
        if kind == DUAL_GEMM:
            a, b1, b2 = ops
            gate, up = torch.matmul(a, b1.T).float(), torch.matmul(a, b2.T).float()
            (torch.nn.functional.silu(gate) * up).half()
        else:
            torch.matmul(ops[0], ops[1].T)


def _dequant_then_mm(kind: str, pairs: list[tuple]) -> None:
    _dense_products(kind, [[_fp16(p[i], p[i + 1]) for i in range(0, len(p), 2)] for p in pairs])


def _bytes(pairs: list[tuple], out_elems: int) -> int:
    total = 2 * out_elems
    for p in pairs:
        total += sum(t.numel() * t.element_size() for t in p)
    return total


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("Error: needs a CUDA GPU (an H200 for the sm90 kernels)")
    args = [a for a in sys.argv[1:] if a != "--candidates"]
    all_candidates = "--candidates" in sys.argv[1:]
    unknown = [a for a in args if a not in KERNEL_NAMES]
    if unknown:
        sys.exit(f"Error: unknown problem {unknown[0]!r}; choose from {', '.join(KERNEL_NAMES)}")
    kinds = args or [GEMV, DUAL_GEMM, GROUP_GEMM]
    print(f"{'kernel':16} {'case':34} {'check':6} {'kernel us':>9} {'deq+mm us':>9} {'mm us':>7} {'floor us':>8}")
    for kind in kinds:
        kernel = get_kernel(KERNEL_NAMES[kind])
        for sizes in BENCHMARKS[kind]:
            data = competition_data(kind, "cuda", SEED, **sizes)
            fn = kernel.prepare(as_problem(kind, data, "cuda"))
            result = check(kind, fn(poisoned(kind, data)), data)
            pairs = _operands(kind, data)
            dense = [[_fp16(p[i], p[i + 1]) for i in range(0, len(p), 2)] for p in pairs]
            t_kernel = do_bench(lambda: fn(data))
            t_deq = do_bench(lambda: _dequant_then_mm(kind, pairs))
            t_mm = do_bench(lambda: _dense_products(kind, dense))
            outs = [c for _, _, c in data[0]] if kind == GROUP_GEMM else [data[-1]]
            floor_us = _bytes(pairs, sum(c.numel() for c in outs)) / COPY_BYTES_PER_S * 1e6
            if kind == GROUP_GEMM:
                case = f"g={sizes['g']} sum(m)={sum(sizes['m'])} n={sizes['n'][0]} k={sizes['k'][0]}"
            else:
                case = " ".join(f"{k}={v}" for k, v in sizes.items())
            print(f"{kernel.name:16} {case[:34]:34} {'PASS' if result.passed else 'FAIL':6} {t_kernel * 1e3:9.1f} "
                  f"{t_deq * 1e3:9.1f} {t_mm * 1e3:7.1f} {floor_us:8.1f}")
            if not result.passed:
                print(f"  {result.reason}"[:100])
            if all_candidates:
                problem = as_problem(kind, data, "cuda")
                for i, config in enumerate(kernel.tuning_candidates(problem)[1:], start=1):
                    fn = kernel.prepare_config(problem, config)
                    ok = check(kind, fn(poisoned(kind, data)), data).passed
                    t = do_bench(lambda: fn(data))
                    print(f"{'  cand ' + str(i):16} {case[:34]:34} {'PASS' if ok else 'FAIL':6} {t * 1e3:9.1f}")


if __name__ == "__main__":
    main()
