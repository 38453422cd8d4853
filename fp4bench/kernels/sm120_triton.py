"""The Triton kernels for consumer Blackwell (sm_120a, sm_121a: RTX 5090, RTX PRO 6000, DGX Spark).

`sm120-w4a16`: bf16 activations x NVFP4 / MXFP4 weights -> bf16. sm_120's block-scaled MMA wants both
operands block-scaled, so W4A16 runs a standard bf16 tensor-op mainloop that dequantizes the FP4 weight on
the way in: sm90-w4a16's kernel (fp4_triton/w4a16.py: 7 integer instructions a byte into bf16x2 registers,
exact), whose dot Triton lowers to mma.sync on sm_120 (HMMA.16816.F32.BF16; there is no wgmma there), with
tile classes that fit sm_120's 99 KB of shared memory per program without register spills
(`w4a16.SM120_TILES`). Proven without the hardware, in tests/test_sm120_w4a16.py: compiled for sm_120a
here, its SASS has the bf16 mma.sync and no wgmma, its shared memory fits, and the same kernel source with
the same host-side argument setup (scale words from the competition's permuted views, strides) is exact under
Triton's CPU interpreter. Not yet run on sm_120 hardware; first run: `fp4bench verify --kernel sm120-w4a16
--format w4a16-nvfp4,w4a16-mxfp4`. Constraints: K a multiple of the format's block size; A K-major.
"""

from __future__ import annotations

from .fp4_triton import w4a16
from .fp4_triton.kernel import W4a16Kernel


class Sm120W4a16(W4a16Kernel):
    name = "sm120-w4a16"
    archs = ("sm_120a", "sm_121a")
    devices = ("cuda",)
    math_path = "bf16"
    tiles = w4a16.SM120_TILES
    description = ("bf16 activations x NVFP4/MXFP4 weights -> bf16: weights decoded to bf16 in registers, "
                   "bf16 mma.sync, split-K (Triton)")


KERNELS = (Sm120W4a16(),)
