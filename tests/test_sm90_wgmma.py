"""The sm90 CUDA kernels (kernels/sm90/, fp4bench.kernels.sm90_wgmma) on the CPU: the kernel's own decoding and
stream-K schedule run on the host (kernels/sm90/decode_probe.cu) and checked exhaustively against fp4bench's
codecs; the argument structs against the C header; the compiled library's SASS (register-operand wgmma of the
right shape for every tile, no spills, every entry point); the Python side's checks. GPU checks of the kernels
themselves are in tests/test_sm90_kernels.py (marked `gpu`).
"""

from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path

import pytest
import torch

from fp4bench.build import HOST_TARGET, BuildSpec, BuildUnit, build, find_cuobjdump
from fp4bench.codecs import decode_e2m1, decode_e8m0
from fp4bench.formats import GEMM_FORMATS
from fp4bench.kernels import get_kernel, sm90_wgmma as sw
from fp4bench.problem import Shape, generate
from fp4bench.resources import kernel_source_dir

PROBE = BuildSpec("sm90-fp4w-probe", HOST_TARGET, (BuildUnit("decode_probe", "sm90/decode_probe.cu"),),
                  product="executable", source_dir="sm90", needs_cutlass=False)
# The probe's decode tables, in its order: (weights, MMA dtype, the power of two the epilogue applies).
DECODE_TABLES = [("nvfp4", torch.float16, 2.0 ** 14), ("nvfp4", torch.bfloat16, 2.0 ** 8),
                 ("mxfp4", torch.bfloat16, 1.0), ("nvfp4", torch.float16, 1.0), ("mxfp4", torch.bfloat16, 1.0)]


@pytest.fixture(scope="module")
def probe() -> Path:
    return build(PROBE)


def _halves(words: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    lo = (words & 0xFFFF).to(torch.int32).to(torch.int16).view(dtype)
    hi = (words >> 16).to(torch.int32).to(torch.int16).view(dtype)
    return lo.double(), hi.double()


def _expected_scales(weights: str) -> torch.Tensor:
    codes = torch.arange(256, dtype=torch.uint8)
    if weights == "nvfp4":
        return codes.view(torch.float8_e4m3fn).double()
    return decode_e8m0(codes).double()


@pytest.mark.nvcc
def test_decode_is_exact_for_every_byte_and_scale(probe, tmp_path):
    """Each byte's two e2m1 values times each scale code, as the consumers compute them (the power-of-two
    factor left for the epilogue applied), equal the codecs' exact products; NaN scales give NaN. The byte sits
    at every position of its word (code % 4) among other bytes."""
    out = tmp_path / "decode.bin"
    subprocess.run([str(probe), "decode", str(out)], check=True)
    words = torch.frombuffer(bytearray(out.read_bytes()), dtype=torch.int32).view(5, 256, 256).long() & 0xFFFFFFFF
    byte = torch.arange(256)
    lo_val, hi_val = decode_e2m1(byte & 0xF).double(), decode_e2m1(byte >> 4).double()
    for index, (weights, dtype, factor) in enumerate(DECODE_TABLES):
        lo, hi = _halves(words[index], dtype)
        scale = _expected_scales(weights)[:, None]
        for got, val in ((lo, lo_val), (hi, hi_val)):
            # Rounding to the 16-bit type changes only what leaves its range (e2m1 x 2^127 overflows, as in
            # fp32, which has bf16's exponent range): every product in range is exact.
            want = (val[None, :] * scale).to(dtype).double()
            got = got * factor
            nan = torch.isnan(want)
            assert torch.equal(torch.isnan(got), nan), (index, weights, dtype)
            assert torch.equal(got[~nan], want[~nan]), (index, weights, dtype)


def _segments(probe: Path, tiles: int, k_steps: int, grid: int) -> list[tuple[int, ...]]:
    text = subprocess.run([str(probe), "schedule", str(tiles), str(k_steps), str(grid)], check=True,
                          capture_output=True, text=True).stdout
    return [tuple(int(v) for v in line.split()) for line in text.splitlines()]


@pytest.mark.nvcc
@pytest.mark.parametrize("tiles,k_steps,grid", [
    (28, 256, 132),   # 128 x 7168 x 16384 on 256-row tiles: every tile split between about five CTAs
    (32, 112, 132),   # 128 x 4096 x 7168
    (56, 32, 132),    # 128 x 7168 x 2048 on 128-row tiles
    (300, 4, 132),    # more tiles than CTAs: whole tiles inside one CTA's range
    (1, 1, 1), (5, 3, 15), (7, 13, 5),
])
def test_stream_k_schedule_covers_every_iteration_once(probe, tiles, k_steps, grid):
    segments = _segments(probe, tiles, k_steps, grid)
    covered = torch.zeros(tiles, k_steps, dtype=torch.int64)
    parts: dict[int, list[tuple[int, int, int]]] = {}
    slots: dict[int, tuple[int, int]] = {}
    for cta, tile, k_first, k_last, first_cta, last_cta, slot in segments:
        assert 0 <= k_first < k_last <= k_steps
        covered[tile, k_first:k_last] += 1
        assert first_cta <= cta <= last_cta
        parts.setdefault(tile, []).append((k_first, cta, slot))
        if first_cta != last_cta:
            # Parts of split tiles go to slots no other part uses, inside the workspace (2 per CTA).
            assert slot not in slots, (slot, slots[slot], (cta, tile))
            assert 2 * cta <= slot < 2 * cta + 2
            slots[slot] = (cta, tile)
    assert bool((covered == 1).all()), "an iteration is computed twice or not at all"
    for tile, ps in parts.items():
        ctas = sorted(c for _, c, _ in ps)
        first, last = next((f, l) for c, t, _, _, f, l, _ in segments if t == tile)
        assert ctas == list(range(first, last + 1)), (tile, ctas, first, last)
        # The CTAs take the tile's K steps in CTA order, so summing parts by CTA sums them in K order.
        assert [k for k, _, _ in sorted(ps, key=lambda p: p[1])] == sorted(k for k, _, _ in ps)
    assert sum(1 for c in {s[0] for s in segments}) == min(grid, tiles * k_steps)


def test_struct_mirrors_header():
    """The ctypes structures list the C structs' fields in order (kernels/sm90/fp4w_args.h)."""
    header = (kernel_source_dir() / "sm90" / "fp4w_args.h").read_text()
    for struct, mirror in (("Fp4wGemmArgs", sw.GemmArgsStruct), ("Fp4wDequantArgs", sw.DequantArgsStruct)):
        body = re.search(r"typedef struct \{([^}]*)\} " + struct + ";", header).group(1)
        names = []
        for line in body.splitlines():
            decl = line.split("//")[0].strip().rstrip(";")
            if decl:
                names += re.findall(r"(\w+)\s*(?:,|$)", decl)
        assert names == [f for f, _ in mirror._fields_], struct
    assert ctypes.sizeof(sw.GemmArgsStruct) == 8 * 6 + 4 * 4 + 8 * 8 + 4 * 2


@pytest.mark.parametrize("fmt_name,shape,reason", [
    ("w4a16-nvfp4", Shape(128, 256, 48), "K=48 is not a multiple of 32"),
    ("nvfp4", Shape(64, 128, 16), "K=16 is not a multiple of 32"),
    ("mxfp4", Shape(64, 128, 96), None),
    ("w4a16-mxfp4", Shape(1, 7, 32), None),
])
def test_can_implement(fmt_name, shape, reason):
    kernel = next(k for k in sw.KERNELS if fmt_name in k.formats)
    fmt = GEMM_FORMATS[fmt_name]
    got = kernel.can_implement(generate(shape, fmt))
    assert (got is None) if reason is None else (reason in got), got


def test_can_implement_refuses_activations_not_contiguous_along_k():
    fmt = GEMM_FORMATS["w4a16-nvfp4"]
    problem = generate(Shape(64, 128, 256), fmt)
    a = problem.data[0]
    strided = torch.empty((a.shape[2], a.shape[1], a.shape[0]), dtype=a.dtype).permute(2, 1, 0)
    problem.data = (strided,) + problem.data[1:]
    assert "contiguous along K" in get_kernel("sm90-w4a16").can_implement(problem)


def test_every_format_has_a_mainloop_and_a_kernel():
    for kernel in sw.KERNELS:
        for fmt_name in kernel.formats:
            mainloop, dequantize_a = sw.FORMAT_MAINLOOPS[fmt_name]
            fmt = GEMM_FORMATS[fmt_name]
            assert mainloop.weights == fmt.b.name
            assert dequantize_a == fmt.a.block_scaled
            # fp16 MMA only where both operands are exact in fp16.
            assert (mainloop.mma == "f16") == (fmt.compute_dtype == torch.float16)
    assert {m for m, _ in sw.FORMAT_MAINLOOPS.values()} <= set(sw.MAINLOOPS)


def test_tiles_fit_shared_memory_and_heuristic_picks_by_m():
    for tile in sw.TILES:
        assert tile.smem_bytes <= sw.SMEM_LIMIT, tile
        # Tiles start on 128-row chunks of the blocked scale layout (the kernel static_asserts it too).
        assert tile.weight_rows % 128 == 0, tile
    kernel = get_kernel("sm90-w4a16")
    fmt = GEMM_FORMATS["w4a16-nvfp4"]
    picks = {m: kernel.heuristic_config(generate(Shape(m, 64, 64), fmt))["tile"] for m in (1, 16, 17, 64, 128, 2304)}
    assert picks[1] == picks[16] and picks[1].startswith("bn16_mt1")
    assert picks[17].startswith("bn32") and picks[64].startswith("bn64")
    assert picks[128].startswith("bn128") and picks[2304].startswith("bn128")
    candidates = kernel.tuning_candidates(generate(Shape(128, 64, 64), fmt))
    assert candidates[0] == kernel.heuristic_config(generate(Shape(128, 64, 64), fmt))
    assert len({c["tile"] for c in candidates}) == len(sw.TILES)


def test_skipped_with_reason_off_hopper():
    from fp4bench.arch import CPU, Target

    for kernel in sw.KERNELS:
        assert "needs sm_90" in kernel.unavailable_reason(CPU)
        assert "this GPU is sm_120" in kernel.unavailable_reason(Target("cuda", 0, (12, 0), "RTX"))


needs_library = pytest.mark.cutlass_build(sw.LIBRARY.name)


@pytest.fixture(scope="module")
def library(cutlass_builds) -> Path:
    return cutlass_builds[sw.LIBRARY.name]


@pytest.mark.nvcc
@pytest.mark.slow
@needs_library
def test_library_compiles_to_register_operand_wgmma_without_spills(library):
    cuobjdump = find_cuobjdump()
    assert cuobjdump, "cuobjdump not found beside nvcc, on PATH or in Triton's wheel"
    sass = subprocess.run([cuobjdump, "-sass", str(library)], capture_output=True, text=True, check=True).stdout
    functions = re.split(r"\n\s*Function : ", sass)[1:]
    gemms = {f.split("\n", 1)[0]: f for f in functions if "fp4w_gemm_kernel" in f.split("\n", 1)[0]}
    assert len(gemms) == len(sw.MAINLOOPS) * len(sw.TILES)
    lib = sw.Fp4wLibrary(str(library))
    for mainloop in sw.MAINLOOPS:
        for tile in sw.TILES:
            config = mainloop.config(tile)
            described = lib.describe(config)
            assert tuple(described[k] for k in ("bn", "mt", "stages", "group", "depth", "ncw")) == (
                tile.bn, tile.mt, tile.stages, tile.group, tile.depth, tile.ncw)
            assert described["smem_bytes"] == tile.smem_bytes <= sw.SMEM_LIMIT
            assert described["bf16"] == (mainloop.mma == "bf16")
            mangled = next(n for n in gemms if f"Li{tile.bn}ELi{tile.mt}ELi{tile.stages}ELi{tile.group}ELi{tile.depth}ELi{tile.ncw}EE" in n
                           and ("13__nv_bfloat16" in n) == (mainloop.mma == "bf16")
                           and f"WeightsE{0 if mainloop.weights == 'nvfp4' else 1}" in n)
            body = gemms[mangled]
            kind = r"\.BF16" if mainloop.mma == "bf16" else ""   # the fp16 form has no suffix
            # A from registers (R..), B from shared memory by descriptor: the decoded weights stay in registers.
            mmas = re.findall(rf"HGMMA\.64x{tile.bn}x16\.F32{kind} R\d+, R\d+, gdesc", body)
            # Four 16-deep K steps per 64-deep step, two steps per pass of the main loop.
            assert len(mmas) == 8 * tile.mt, (config, len(mmas))
            assert not re.search(r"\b(LDL|STL)\b", body), f"{config} spills to local memory"
            assert "USETMAXREG" in body, f"{config}: no register reallocation between producer and consumers"
    for fmt in ("nvfp4", "mxfp4"):
        assert lib.dequantizer(fmt) is not None
    assert lib.status(3).startswith("unsupported shape")


# ---------------------------------------------------------------------------------------------------------
# GPU: every tile configuration, not only the heuristic's (tests/test_sm90_kernels.py checks those)
# ---------------------------------------------------------------------------------------------------------
KERNEL_BY_FORMAT = {"w4a16-nvfp4": "sm90-w4a16", "w4a16-mxfp4": "sm90-w4a16", "nvfp4": "sm90-nvfp4",
                    "nvfp4-bf16": "sm90-nvfp4", "mxfp4": "sm90-mxfp4"}
# Edge shapes (M, N off the tiles; K off the 64-deep step; a batch) and a long K split by stream-K.
TILE_SHAPES = [Shape(128, 256, 256), Shape(77, 200, 96), Shape(1, 384, 2048), Shape(256, 384, 512, 3),
               Shape(64, 96, 16384)]


@pytest.mark.gpu
@pytest.mark.parametrize("fmt_name", sorted(KERNEL_BY_FORMAT))
def test_every_tile_is_exact_on_edge_shapes(fmt_name, hopper_target):
    from exactness import check_exact_products

    from fp4bench.problem import poison_output

    kernel = get_kernel(KERNEL_BY_FORMAT[fmt_name])
    failures = []
    for tile in sw.TILES:
        for shape in TILE_SHAPES:
            p = generate(shape, GEMM_FORMATS[fmt_name], "cuda")
            out = kernel.prepare_config(p, {"tile": tile.name})(poison_output(p).data)
            torch.cuda.synchronize()
            ok, detail = check_exact_products(out, p)
            if not ok:
                failures.append((tile.name, str(shape), detail[:200]))
    assert not failures, failures
