"""The Blackwell CUTLASS variants without Blackwell hardware.

CPU-only: host-side argument setup (pointers, strides, batch L, scale storage) against the competition's
tensors, shape limits, tile choice, skip reasons, the config table, `fp4bench list`.
nvcc (slow; `cutlass_build`: every variant is compiled once a session, in the background while the rest of
the suite runs, see conftest.py): each library compiles for its target, its disassembly holds the
block-scaled MMA instructions, and CUTLASS's own can_implement agrees with ours.
"""

from __future__ import annotations

import ctypes
import re
import subprocess

import pytest
import torch
from click.testing import CliRunner

from fp4bench.arch import CPU, Target
from fp4bench.build import find_cuobjdump
from fp4bench.case import CaseStatus
from fp4bench.cli import main
from fp4bench.formats import GEMM_FORMATS
from fp4bench.kernels import all_kernels, cutlass_blackwell as cb
from fp4bench.layouts import blocked_numel, blocked_offset
from fp4bench.pipeline import check_case
from fp4bench.problem import GEMM, Shape, generate
from fp4bench.resources import kernel_source_dir

EXPECTED_VARIANTS = {"sm120-nvfp4", "sm120-nvfp4-bf16", "sm120-mxfp4", "sm120-w4a8", "sm120-mxfp8", "sm100-nvfp4",
                     "sm100-w4a8", "sm100-mxfp8", "sm120-nvfp4-grouped", "sm100-nvfp4-grouped"}
HOPPER = Target("cuda", 0, (9, 0), "NVIDIA H200")
RTX5090 = Target("cuda", 0, (12, 0), "NVIDIA GeForce RTX 5090")


def _addr(t: torch.Tensor, *idx) -> int:
    return t[idx].data_ptr()


# ------------------------------------------------------------------------------------- argument setup

@pytest.mark.parametrize("fmt_name,shape", [
    ("nvfp4", Shape(128, 256, 256, 1, seed=3)),
    ("nvfp4", Shape(130, 200, 192, 3, seed=4)),      # M, N not multiples of 128; batched
    ("mxfp4", Shape(96, 136, 320, 2, seed=5)),
    ("w4a8", Shape(200, 72, 384, 2, seed=6)),
    ("mxfp8", Shape(130, 72, 96, 2, seed=7)),        # 3 scale columns: padded to 4 in the blocked layout
])
def test_arguments_address_every_operand_element(fmt_name, shape):
    fmt = GEMM_FORMATS[fmt_name]
    p = generate(shape, fmt)
    a, b, _, _, sfa_p, sfb_p, c = p.data
    args = cb.GemmArguments.from_data(p.data, fmt_name)
    m, n, k, l = shape.m, shape.n, shape.k, shape.l
    assert (args.m, args.n, args.k, args.l) == (m, n, k, l)
    # Packed strides in elements, as CUTLASS's make_cute_packed_stride gives for K-major operands.
    assert (args.lda, args.batch_stride_a) == (k, m * k)
    assert (args.ldb, args.batch_stride_b) == (k, n * k)
    assert (args.ldd, args.batch_stride_d) == (n, m * n)
    assert args.alpha == 1.0
    gen = torch.Generator().manual_seed(shape.seed)
    ea, eb = fmt.a.element.per_byte, fmt.b.element.per_byte
    for _ in range(200):
        i, j, kk, bi = (int(torch.randint(0, x, (1,), generator=gen)) for x in (m, n, k, l))
        # Element (row, kk, batch) lives at base + (batch * batch_stride + row * ld + kk) / per_byte bytes.
        assert args.a + (bi * args.batch_stride_a + i * args.lda + kk) // ea == _addr(a, i, kk // ea, bi)
        assert args.b + (bi * args.batch_stride_b + j * args.ldb + kk) // eb == _addr(b, j, kk // eb, bi)
        assert args.d + (bi * args.batch_stride_d + i * args.ldd + j) * c.element_size() == _addr(c, i, j, bi)
        for sf_p, rows, op, r in ((sfa_p, m, fmt.a, i), (sfb_p, n, fmt.b, j)):
            cols = op.scale_cols(k)
            kb = kk // op.block_size
            base = args.sfa if sf_p is sfa_p else args.sfb
            # What CUTLASS computes (the layout test proves it equals blocked_offset) must be the byte the
            # competition's view holds for (r, kb, batch).
            want = _addr(sf_p, r % 32, (r // 32) % 4, r // 128, kb % 4, kb // 4, bi)
            assert base + bi * blocked_numel(rows, cols) + blocked_offset(r, kb, rows, cols) == want


def test_struct_mirrors_arguments():
    p = generate(Shape(128, 64, 128, 2, seed=9), GEMM_FORMATS["nvfp4"])
    args = cb.GemmArguments.from_data(p.data, "nvfp4")
    st = args.to_struct()
    for name, _ in cb.GemmArgsStruct._fields_:
        got = getattr(st, name)
        assert (got or 0) == getattr(args, name), name


def test_arguments_refuse_repacked_or_wrong_tensors():
    fmt = GEMM_FORMATS["nvfp4"]
    p = generate(Shape(128, 128, 256, 2, seed=11), fmt)
    a, b, sfa, sfb, sfa_p, sfb_p, c = p.data
    with pytest.raises(ValueError, match="K-major"):
        cb.GemmArguments.from_data((a.contiguous(), b, sfa, sfb, sfa_p, sfb_p, c), "nvfp4")
    with pytest.raises(ValueError, match="permuted view"):
        cb.GemmArguments.from_data((a, b, sfa, sfb, sfa_p.contiguous(), sfb_p, c), "nvfp4")
    with pytest.raises(ValueError, match="writes"):
        cb.GemmArguments.from_data((a, b, sfa, sfb, sfa_p, sfb_p, c.to(torch.bfloat16)), "nvfp4")
    with pytest.raises(ValueError, match="shape"):
        cb.GemmArguments.from_data((a, b, sfa, sfb, sfb_p, sfa_p[:, :, :, :, :, :1], c), "nvfp4")
    mx = generate(Shape(128, 128, 256, 1, seed=12), GEMM_FORMATS["mxfp4"])
    with pytest.raises(ValueError, match="stores"):
        cb.GemmArguments.from_data(mx.data[:1] + p.data[1:], "w4a8")


# ------------------------------------------------------------------------------- limits, tiles, skips

def _kernel(name):
    return all_kernels()[name]


def test_every_variant_is_registered():
    ks = all_kernels()
    assert EXPECTED_VARIANTS <= set(ks)
    for name in EXPECTED_VARIANTS:
        assert ks[name].archs == (("sm_120a",) if name.startswith("sm120") else ("sm_100a",))


@pytest.mark.parametrize("name,shape,reason", [
    ("sm120-nvfp4", Shape(128, 7168, 16384), None),
    ("sm120-nvfp4", Shape(100, 200, 64), None),
    ("sm120-nvfp4", Shape(128, 256, 48), "K=48 is not a multiple of 32"),
    ("sm120-nvfp4", Shape(128, 100, 256), "N=100 is not a multiple of 8"),
    ("sm120-w4a8", Shape(128, 256, 384), None),
    ("sm120-w4a8", Shape(128, 256, 192), "K=192 is not a multiple of 128"),
    ("sm100-w4a8", Shape(128, 256, 160), "K=160 is not a multiple of 128"),
    ("sm120-mxfp8", Shape(130, 256, 96), None),
    ("sm100-mxfp8", Shape(1, 8, 32), None),
    ("sm100-mxfp8", Shape(128, 12, 64), "N=12 is not a multiple of 8"),
    ("sm100-nvfp4", Shape(7, 8, 32), None),
])
def test_can_implement(name, shape, reason):
    got = _kernel(name).can_implement_shape(shape)
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got


def test_tile_table_chooses_per_shape():
    v = cb.VARIANTS_BY_NAME["sm120-nvfp4"]
    assert v.choose(1).name == v.choose(128).name == "sm120_nvfp4_f16_128x128x256"
    assert v.choose(129).name == v.choose(2304).name == "sm120_nvfp4_f16_256x128x128"


def test_skipped_with_reason_on_other_architectures():
    k = _kernel("sm120-nvfp4")
    assert k.unavailable_reason(HOPPER) == "needs sm_120; this GPU is sm_90"
    assert _kernel("sm100-w4a8").unavailable_reason(HOPPER) == "needs sm_100; this GPU is sm_90"
    assert _kernel("sm100-nvfp4").unavailable_reason(RTX5090) == "needs sm_100; this GPU is sm_120"
    assert k.unavailable_reason(CPU) is not None


def test_missing_toolchain_is_a_reason_on_the_right_gpu(monkeypatch):
    monkeypatch.setattr(cb, "toolchain_problem", lambda spec=None: "nvcc (the CUDA compiler) is not installed")
    monkeypatch.setattr(cb, "cached_product", lambda spec: None)
    reason = _kernel("sm120-mxfp4").unavailable_reason(RTX5090)
    assert reason is not None and "nvcc" in reason
    monkeypatch.setattr(cb, "toolchain_problem", lambda spec=None: None)
    assert _kernel("sm120-mxfp4").unavailable_reason(RTX5090) is None


def test_harness_skips_without_attempting(monkeypatch):
    k = _kernel("sm120-nvfp4")
    monkeypatch.setattr(k, "prepare", lambda problem: pytest.fail("a skipped kernel was prepared"))
    out = check_case(k, Shape(128, 256, 256), GEMM_FORMATS["nvfp4"], CPU, [1111])
    assert out.status == CaseStatus.SKIP and out.reason


def test_config_tables_agree():
    configs = (kernel_source_dir() / "cutlass" / "configs.cuh").read_text()
    probe = (kernel_source_dir() / "cutlass" / "layout_probe.cpp").read_text()
    defined = set(re.findall(r"^using (sm\d+_\w+) =", configs, re.M))
    used = {t.name for v in cb.VARIANTS for t in v.tiles}
    assert used == defined
    probed = set(re.findall(r'\{"(sm\d+_\w+)"', probe))
    assert probed <= defined
    # Every (target, scale vector) pair the kernels use is probed.
    assert {n.split("_")[0] + ("16" if "nvfp4" in n else "32") for n in probed} == \
        {n.split("_")[0] + ("16" if "nvfp4" in n else "32") for n in used}


def test_list_shows_every_variant():
    res = CliRunner().invoke(main, ["list", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    lines = {ln.split()[0]: ln for ln in res.output.splitlines() if ln.strip() and not ln.startswith(("-", " "))}
    for name in EXPECTED_VARIANTS:
        assert name in lines, res.output
        assert ("sm_120a" if name.startswith("sm120") else "sm_100a") in lines[name]
        assert " no: needs sm_1" in lines[name]   # cannot run on a CPU, and says so (built or not)
    assert "w4a8" in lines["sm100-w4a8"]
    assert "mxfp8" in lines["sm120-mxfp8"] and "mxfp8" in lines["sm100-mxfp8"]


# ------------------------------------------------------------------------- compiled (nvcc, session)

# Block-scaled MMA in SASS: SM120's warp-level OMMA/QMMA with scale factors, SM100's tcgen05 UTC*MMA.
SASS_PATTERNS = {
    # SM120: OMMA (FP4 x FP4, m16n8k64) and QMMA (f8f6f4, m16n8k32) with .SF and the scale type
    # (UE4M3 for NVFP4, E8 for ue8m0).
    "sm120-nvfp4": r"OMMA\.SF\.16864\.F32\.E2M1\.E2M1\.UE4M3",
    "sm120-nvfp4-bf16": r"OMMA\.SF\.16864\.F32\.E2M1\.E2M1\.UE4M3",
    "sm120-mxfp4": r"OMMA\.SF\.16864\.F32\.E2M1\.E2M1\.E8",
    "sm120-w4a8": r"QMMA\.SF\.16832\.F32\.E4M3\.E2M1\.E8",
    "sm120-mxfp8": r"QMMA\.SF\.16832\.F32\.E4M3\.E4M3\.E8",
    "sm120-nvfp4-grouped": r"OMMA\.SF\.16864\.F32\.E2M1\.E2M1\.UE4M3",
    # SM100: tcgen05 UMMA reading both scale tensors from tensor memory (the two extra tmem operands).
    "sm100-nvfp4": r"UTCOMMA\.4X gdesc\[\w+\], gdesc\[\w+\], tmem\[\w+\], tmem\[\w+\], idesc\[\w+\], tmem\[\w+\]",
    "sm100-w4a8": r"UTCQMMA\S* gdesc\[\w+\], gdesc\[\w+\], tmem\[\w+\], tmem\[\w+\], idesc\[\w+\], tmem\[\w+\]",
    "sm100-nvfp4-grouped": r"UTCOMMA\.4X gdesc\[\w+\], gdesc\[\w+\], tmem\[\w+\], tmem\[\w+\], idesc\[\w+\], tmem\[\w+\]",
    "sm100-mxfp8": r"UTCQMMA\S* gdesc\[\w+\], gdesc\[\w+\], tmem\[\w+\], tmem\[\w+\], idesc\[\w+\], tmem\[\w+\]",
}


# Needs every variant's library, each built from the kernel's own spec (the one `fp4bench build` builds).
needs_variants = pytest.mark.cutlass_build(*(v.name for v in cb.VARIANTS))


@pytest.fixture(scope="session")
def built_variants(cutlass_builds):
    return {v.name: cutlass_builds[v.name] for v in cb.VARIANTS}


@pytest.mark.nvcc
@pytest.mark.slow
@needs_variants
def test_variants_compile_to_block_scaled_mma(built_variants):
    cuobjdump = find_cuobjdump()
    assert cuobjdump, "cuobjdump not found beside nvcc, on PATH or in Triton's wheel"
    for v in cb.VARIANTS:
        path = built_variants[v.name]
        elf = subprocess.run([cuobjdump, "-lelf", str(path)], capture_output=True, text=True, check=True).stdout
        assert v.target.replace("_", "") in elf.replace("_", ""), f"{v.name}: no {v.target} code in {elf}"
        sass = subprocess.run([cuobjdump, "-sass", str(path)], capture_output=True, text=True, check=True).stdout
        kernels = re.findall(r"Function : (\S+)", sass)
        assert len(kernels) == len(v.tiles), f"{v.name}: {len(kernels)} kernels for {len(v.tiles)} tile configs"
        assert re.search(SASS_PATTERNS[v.name], sass), f"{v.name}: no block-scaled MMA in its SASS"


@pytest.mark.nvcc
@pytest.mark.slow
@needs_variants
def test_cutlass_can_implement_agrees(built_variants):
    """CUTLASS's host-side can_implement (through the C ABI) accepts what ours accepts, rejects misaligned K.

    GEMM variants here; the grouped ones in tests/test_cutlass_grouped.py."""
    for v in (v for v in cb.VARIANTS if v.problem == GEMM):
        lib = cb.CutlassLibrary(str(built_variants[v.name]))
        fa, _, _ = cb.operand_formats(v.format)
        for tile in v.tiles:
            good = cb.GemmArgsStruct(a=256, b=256, sfa=256, sfb=256, d=256, m=130, n=200, k=2 * v.k_multiple, l=2,
                                     lda=2 * v.k_multiple, batch_stride_a=130 * 2 * v.k_multiple,
                                     ldb=2 * v.k_multiple, batch_stride_b=200 * 2 * v.k_multiple,
                                     ldd=200, batch_stride_d=130 * 200, alpha=1.0)
            assert lib.can_implement(tile.name, good) is None, (v.name, tile.name)
            # Legal for the format (a multiple of its block) but not for the kernel: CUTLASS must refuse too.
            for bad_k in [k for k in range(fa.block_size, 4 * v.k_multiple, fa.block_size) if k % v.k_multiple]:
                bad = cb.GemmArgsStruct(**{f: getattr(good, f) for f, _ in cb.GemmArgsStruct._fields_})
                bad.k, bad.lda, bad.ldb = bad_k, bad_k, bad_k
                assert lib.can_implement(tile.name, bad) is not None, (v.name, tile.name, bad_k)
            bad = cb.GemmArgsStruct(**{f: getattr(good, f) for f, _ in cb.GemmArgsStruct._fields_})
            bad.n, bad.ldd = 100, 100          # rows of 200 bytes: not 16-byte aligned
            assert lib.can_implement(tile.name, bad) is not None, (v.name, tile.name, "N=100")
            assert lib.workspace_size(tile.name, good) >= 0
        assert "success" in lib.status(0).lower()


class FakeLibrary:
    """Stands in for a built library: records what the C entry point receives."""

    def __init__(self, code=0):
        self.calls, self.code = [], code

    def can_implement(self, config, args):
        return None

    def workspace_size(self, config, args):
        return 64

    def status(self, code):
        return f"status {code}"

    def runner(self, config):
        def run(args_ref, workspace, stream):
            st = ctypes.cast(args_ref, ctypes.POINTER(cb.GemmArgsStruct)).contents
            self.calls.append((config, {f: getattr(st, f) for f, _ in cb.GemmArgsStruct._fields_}, workspace, stream))
            return self.code
        return run


def test_prepared_run_passes_the_arguments_and_reuses_them(monkeypatch):
    fake = FakeLibrary()
    monkeypatch.setattr(cb, "load_library", lambda name: fake)
    monkeypatch.setattr(cb, "current_stream", lambda device: 1234)
    derived = []
    real_from_data = cb.GemmArguments.from_data.__func__
    monkeypatch.setattr(cb.GemmArguments, "from_data",
                        classmethod(lambda cls, data, fmt: derived.append(1) or real_from_data(cls, data, fmt)))
    k = _kernel("sm120-nvfp4")
    p = generate(Shape(256, 128, 512, 2, seed=21), GEMM_FORMATS["nvfp4"])
    fn = k.prepare(p)
    other = generate(Shape(256, 128, 512, 2, seed=22), GEMM_FORMATS["nvfp4"])
    for data in (p.data, p.data, other.data):
        assert fn(data) is data[6]
    config, fields, workspace, stream = fake.calls[0]
    assert config == "sm120_nvfp4_f16_256x128x128" and stream == 1234 and workspace
    want = cb.GemmArguments.from_data(p.data, "nvfp4")
    assert fields == {f: getattr(want, f) for f, _ in cb.GemmArgsStruct._fields_}
    assert fake.calls[2][1]["a"] == other.data[0].data_ptr()
    assert len(derived) == 1 + 2 + 1   # prepare, two distinct input sets (the repeat reuses one), this test


def test_prepared_run_raises_the_status(monkeypatch):
    monkeypatch.setattr(cb, "load_library", lambda name: FakeLibrary(code=7))
    monkeypatch.setattr(cb, "current_stream", lambda device: 0)
    p = generate(Shape(128, 64, 256, 1, seed=23), GEMM_FORMATS["mxfp4"])
    fn = _kernel("sm120-mxfp4").prepare(p)
    with pytest.raises(RuntimeError, match=r"sm120-mxfp4 \(sm120_mxfp4_bf16_128x128x256\): status 7"):
        fn(p.data)
