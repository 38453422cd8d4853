"""Every tile configuration of the sm90 CUDA kernels against the exact reference, on a few shapes (GPU).

    python scripts/check_sm90_wgmma.py [--quick]
One line per (format, tile, shape): pass/FAIL, the worst error and the stream-K split (a split tile is summed
by the last CTA), then a summary. Inputs are fresh random data; the output is NaN-poisoned before each launch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from exactness import check_exact_products  # noqa: E402

from fp4bench.formats import GEMM_FORMATS  # noqa: E402
from fp4bench.kernels import get_kernel  # noqa: E402
from fp4bench.kernels.sm90_wgmma import TILES  # noqa: E402
from fp4bench.problem import Shape, generate, poison_output  # noqa: E402

KERNEL_BY_FORMAT = {"w4a16-nvfp4": "sm90-w4a16", "w4a16-mxfp4": "sm90-w4a16", "nvfp4": "sm90-nvfp4",
                    "nvfp4-bf16": "sm90-nvfp4", "mxfp4": "sm90-mxfp4"}
SHAPES = [Shape(128, 256, 256), Shape(77, 200, 96), Shape(1, 384, 2048), Shape(130, 129, 32), Shape(200, 72, 1056),
          Shape(256, 384, 512, 3), Shape(64, 96, 16384), Shape(16, 1024, 4096, seed=3)]
QUICK = SHAPES[:3] + SHAPES[5:7]


def main() -> int:
    shapes = QUICK if "--quick" in sys.argv else SHAPES
    failures = 0
    for fmt_name, kname in KERNEL_BY_FORMAT.items():
        kernel = get_kernel(kname)
        for tile in TILES:
            for shape in shapes:
                p = generate(shape, GEMM_FORMATS[fmt_name], "cuda")
                try:
                    fn = kernel.prepare_config(p, {"tile": tile.name})
                    out = fn(poison_output(p).data)
                    torch.cuda.synchronize()
                    ok, detail = check_exact_products(out, p)
                except Exception as e:   # report and go on: one broken configuration must not hide the others
                    ok, detail = False, f"{type(e).__name__}: {e}"
                failures += not ok
                if not ok or "--verbose" in sys.argv:
                    print(f"{'pass' if ok else 'FAIL'} {fmt_name:12} {tile.name:16} {str(shape):16} {detail[:140]}")
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
