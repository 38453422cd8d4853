"""Run one sm90 kernel configuration a few times for a profiler (ncu).

    python scripts/profile_sm90.py KERNEL FORMAT M N K [CONFIG_INDEX] [PRE_DEQUANT_A]
CONFIG_INDEX picks `sm90_triton.GPU_CONFIGS`; PRE_DEQUANT_A is 0 or 1. No autotuning: three launches of the
GEMM kernel, so `ncu -k regex:_fp4_gemm_kernel --launch-skip 2 -c 1` profiles one warm launch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fp4bench.formats import GEMM_FORMATS  # noqa: E402
from fp4bench.kernels import get_kernel  # noqa: E402
from fp4bench.kernels.sm90_triton import GPU_CONFIGS, launch_gemm, plan_launch  # noqa: E402
from fp4bench.problem import Shape, generate  # noqa: E402


def main() -> None:
    name, fmt_name, m, n, k = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    cfg = GPU_CONFIGS[int(sys.argv[6]) if len(sys.argv) > 6 else 0]
    pre = len(sys.argv) > 7 and sys.argv[7] == "1"
    fmt = GEMM_FORMATS[fmt_name]
    problem = generate(Shape(m, n, k), fmt, "cuda")
    kernel = get_kernel(name)
    plan = plan_launch(cfg, m, n, k, 1, torch.device("cuda"), pre_dequant_a=pre)
    print("plan", plan)
    for _ in range(3):
        launch_gemm(problem.data, fmt, plan, kernel.use_asm, kernel.fp8)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
