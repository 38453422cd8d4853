"""Run one sm90 kernel a few times for a profiler (ncu): python scripts/profile_sm90.py KERNEL FORMAT M N K.

No autotuning: three launches with the kernel's first configuration, so `ncu --launch-skip 2 -c 1` profiles one
warm launch."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fp4bench.formats import GEMM_FORMATS  # noqa: E402
from fp4bench.kernels import get_kernel  # noqa: E402
from fp4bench.problem import Shape, generate  # noqa: E402


def main() -> None:
    name, fmt_name, m, n, k = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    problem = generate(Shape(m, n, k), GEMM_FORMATS[fmt_name], "cuda")
    kernel = get_kernel(name)
    for _ in range(3):
        kernel.run(problem.data)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
