"""sm120-w4a16 without sm_120 hardware: compiled for sm_120a here, its SASS is the bf16 mma.sync mainloop
(HMMA.16816.F32.BF16, no wgmma), every tile class fits sm_120's shared memory without spills; the same kernel
and host-side setup are exact under Triton's CPU interpreter and catch a wrong scale; elsewhere it is skipped
with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fp4bench.arch import CPU, Target
from fp4bench.kernels import get_kernel
from fp4bench.kernels.fp4_triton import w4a16
from fp4bench.problem import Shape

REPO = Path(__file__).resolve().parent.parent
HOPPER = Target("cuda", 0, (9, 0), "H100")
RTX_5090 = Target("cuda", 0, (12, 0), "NVIDIA GeForce RTX 5090")
DGX_SPARK = Target("cuda", 0, (12, 1), "NVIDIA GB10")
# sm_120's largest shared-memory allocation per thread block (opt-in), in bytes: 99 KB.
SM120_MAX_SHARED = 99 * 1024


def test_registered_for_sm120_and_skipped_elsewhere_with_the_reason():
    k = get_kernel("sm120-w4a16")
    assert k.formats == ("w4a16-nvfp4", "w4a16-mxfp4") and k.archs == ("sm_120a", "sm_121a")
    assert k.math_path == "bf16" and k.tiles == w4a16.SM120_TILES
    assert k.unavailable_reason(RTX_5090) is None and k.unavailable_reason(DGX_SPARK) is None
    assert k.unavailable_reason(HOPPER) == "needs sm_120 or sm_121; this GPU is sm_90"
    assert k.unavailable_reason(CPU) == "needs sm_120 or sm_121; this machine has no GPU"


@pytest.mark.parametrize("shape", [Shape(1, 7168, 16384), Shape(16, 4096, 7168), Shape(64, 7168, 2048),
                                   Shape(128, 7168, 16384), Shape(128, 4096, 7168), Shape(2304, 4608, 7168)])
def test_every_shape_class_gets_an_sm120_tile(shape):
    tile = w4a16.tile_class(shape, w4a16.SM120_TILES)
    assert any(tile is t for t in w4a16.SM120_TILES)
    assert tile["block_k"] % 32 == 0 and w4a16.PER_SM[id(tile)] >= 1


def _compile_sm120(tile: dict, e8m0: bool):
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).parent))
    from triton_aot import compile_for, sass

    kernel = w4a16.w4a16_kernel
    pointers = dict(zip(kernel.arg_names[:6], ("*bf16", "*i32", "*i32", "*bf16", "*fp32", "*i32")))
    types = {n: pointers.get(n, "i32") for n in kernel.arg_names}
    constexprs = {"stride_cn": 1, "E8M0": e8m0, "SF_BLOCK": 32 if e8m0 else 16, "EVEN_K": True, "EVEN_M": True,
                  "EVEN_N": True, "USE_ASM": True, "WORD_SCALES": tile["word_scales"], "BLOCK_N": tile["block_n"],
                  "BLOCK_M": tile["block_m"], "BLOCK_K": tile["block_k"]}
    divisible = tuple(pointers) + ("stride_am", "stride_al", "stride_wn", "stride_wl", "stride_sl", "stride_cm",
                                   "stride_cl", "K", "N", "M")
    compiled = compile_for(kernel, 120, types, constexprs, divisible, tile["num_warps"], tile["num_stages"])
    return compiled, sass(compiled)


@pytest.mark.slow
@pytest.mark.parametrize("tile_index", range(len(w4a16.SM120_TILES)))
@pytest.mark.parametrize("fmt", ["w4a16-nvfp4", "w4a16-mxfp4"])
def test_compiles_for_sm120a_to_bf16_mma_sync_within_shared_memory_without_spills(tile_index, fmt):
    from triton_aot import nvdisasm_path

    if nvdisasm_path() is None:
        pytest.skip("needs nvdisasm (Triton's bundled copy or the CUDA toolkit's)")
    tile = w4a16.SM120_TILES[tile_index]
    compiled, code = _compile_sm120(tile, e8m0=fmt.endswith("mxfp4"))
    assert re.search(r"\.target\s+sm_120a\b", compiled.asm["ptx"])
    mma = set(re.findall(r"\b[HQOU]\w*MMA\.[\w.]+", code))
    assert mma == {"HMMA.16816.F32.BF16"}, mma          # bf16 mma.sync only: no wgmma, no other MMA
    # The weights are decoded in registers: the PTX decode (bf16x2 multiplies) feeds the MMA.
    assert "mul.rn.bf16x2" in compiled.asm["ptx"]
    assert compiled.metadata.shared <= SM120_MAX_SHARED, compiled.metadata.shared
    assert not re.search(r"\b(LDL|STL)\b", code), "register spills"


INTERPRETED = textwrap.dedent("""
    import torch
    from fp4bench.checking import check_output
    from fp4bench.formats import gemm_format
    from fp4bench.kernels import get_kernel
    from fp4bench.problem import Shape, generate, poison_output
    from fp4bench.reference import expected_output, reference_gemm

    kernel = get_kernel("sm120-w4a16")
    for name in ("w4a16-nvfp4", "w4a16-mxfp4"):
        fmt = gemm_format(name)
        for shape in (Shape(20, 72, 1056, seed=3), Shape(48, 64, 512, 2, seed=4), Shape(1, 48, 256, seed=5)):
            p = generate(shape, fmt)
            out = kernel.prepare(p)(poison_output(p).data)
            e = expected_output(p)
            r = check_output(out, e.values, fmt.out_dtype, allowance=e.allowance)
            assert r.passed, (name, shape, r.reason)
        # A planted bug: one scale byte of row 5 in the permuted bytes the kernel reads (the reference reads
        # the row-major copy, which keeps the original).
        p = generate(Shape(16, 96, 256, seed=7), fmt)
        fn = kernel.prepare(p)
        sfb_perm = p.data[5]
        if name.endswith("nvfp4"):   # e4m3 scales are drawn from 0..3; e8m0 ones from 2^-3..2^3
            wrong = torch.tensor(7.0).to(sfb_perm.dtype)
        else:
            wrong = torch.tensor(127 + 7, dtype=torch.uint8).view(sfb_perm.dtype)
        sfb_perm[5, 0, 0, 1, 0, 0] = wrong
        bad = check_output(fn(poison_output(p).data), reference_gemm(p), fmt.out_dtype)
        assert not bad.passed and {tuple(f["index"])[1] for f in bad.first_mismatches} == {5}, bad.reason
    print("OK")
""")


@pytest.mark.slow
def test_same_kernel_and_host_setup_are_exact_interpreted_and_catch_a_wrong_scale():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", INTERPRETED], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
