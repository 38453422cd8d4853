"""Run one sm90 kernel configuration a few times for a profiler (ncu).

    python scripts/profile_sm90.py KERNEL FORMAT M N K [CANDIDATE_INDEX]
CANDIDATE_INDEX picks one of the kernel's tuning candidates (default: the configuration `run` would use).
Three launches of the prepared kernel, so `ncu -k regex:fp4_gemm_kernel --launch-skip 3 -c 1` profiles one
warm launch (prepare launches once to compile).
"""

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
    if len(sys.argv) > 6:
        config = kernel.tuning_candidates(problem)[int(sys.argv[6])]
        fn = kernel.prepare_config(problem, config)
    else:
        config, fn = kernel.launch_config(problem), kernel.prepare(problem)
    print("config", config)
    for _ in range(3):
        fn(problem.data)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
