"""The grouped NVFP4 CUTLASS variants (sm120-nvfp4-grouped, sm100-nvfp4-grouped) without Blackwell hardware.

CPU-only: the per-group arguments derived from the competition's group_gemm tuple (every element's address,
scale storage, refusals), the C structs built from them, the prepared callable against a stand-in library
(argument image packed and copied once per input set, the groups' C returned), limits and registration.
nvcc (the session's background build, see conftest.py): the built library's own host entry points, called
on the CPU (image size, CUTLASS's can_implement and workspace size on the competition's group sizes).
The image's contents (shapes, pointers, strides, per-group scale layouts) are proven by the layout probe in
tests/test_cutlass_layout.py; the block-scaled MMA in SASS by tests/test_cutlass_blackwell.py.
"""

from __future__ import annotations

import ctypes

import pytest
import torch

from fp4bench.arch import CPU, Target
from fp4bench.competition import generate_input
from fp4bench.formats import GEMM_FORMATS
from fp4bench.kernels import all_kernels, cutlass_blackwell as cb
from fp4bench.layouts import blocked_offset
from fp4bench.problem import GEMM, GROUP_GEMM, Problem, Shape

GROUPED = ("sm120-nvfp4-grouped", "sm100-nvfp4-grouped")
NVFP4 = GEMM_FORMATS["nvfp4"]
B200 = Target("cuda", 0, (10, 0), "NVIDIA B200")


def group_data(ms, ns, ks, seed=5):
    return generate_input("nvfp4_group_gemm", device="cpu", m=ms, n=ns, k=ks, g=len(ms), seed=seed)


def group_problem(data) -> Problem:
    m, n, k, _ = data[3][0]
    return Problem(Shape(m, n, k), NVFP4, data, kind=GROUP_GEMM)


def _addr(t: torch.Tensor, *idx) -> int:
    return t[idx].data_ptr()


# ------------------------------------------------------------------------------------- argument setup

@pytest.mark.parametrize("ms,ns,ks", [
    ([96, 128], [128, 256], [128, 512]),            # a test case of the competition's task.yml
    ([40, 56, 384, 512], [512, 384, 256, 128], [256, 256, 256, 256]),
    ([1, 200], [8, 72], [32, 96]),                  # scale columns 2 and 6: padded to 4 and 8
])
def test_group_arguments_address_every_operand_element(ms, ns, ks):
    data = group_data(ms, ns, ks)
    groups = cb.grouped_arguments(data, "nvfp4")
    assert len(groups) == len(ms)
    gen = torch.Generator().manual_seed(sum(ms))
    for g, ((a, b, c), (sfa_p, sfb_p), q) in enumerate(zip(data[0], data[2], groups)):
        m, n, k = ms[g], ns[g], ks[g]
        assert (q.m, q.n, q.k) == (m, n, k)
        assert (q.lda, q.ldb, q.ldd) == (k, k, n)     # packed K-major rows, in elements
        assert q.d == c.data_ptr()
        for _ in range(100):
            i, j, kk = (int(torch.randint(0, x, (1,), generator=gen)) for x in (m, n, k))
            # An e2m1 element (row, kk) lives at base + (row * ld + kk) / 2 bytes.
            assert q.a + (i * q.lda + kk) // 2 == _addr(a, i, kk // 2, 0)
            assert q.b + (j * q.ldb + kk) // 2 == _addr(b, j, kk // 2, 0)
            assert q.d + (i * q.ldd + j) * c.element_size() == _addr(c, i, j, 0)
            kb, cols = kk // NVFP4.a.block_size, NVFP4.a.scale_cols(k)
            for base, sf_p, r, rows in ((q.sfa, sfa_p, i, m), (q.sfb, sfb_p, j, n)):
                want = _addr(sf_p, r % 32, (r // 32) % 4, r // 128, kb % 4, kb // 4, 0)
                assert base + blocked_offset(r, kb, rows, cols) == want


def test_group_arguments_refuse_what_cannot_be_read_in_place():
    data = group_data([64, 72], [128, 256], [256, 128])
    abc, scales, permuted, sizes = data
    (a, b, c), (sfa_p, sfb_p) = abc[1], permuted[1]

    def with_group1(abc1=None, perm1=None, size1=None):
        return ([abc[0], abc1 or abc[1]], scales, [permuted[0], perm1 or permuted[1]], [sizes[0], size1 or sizes[1]])

    cases = [
        (with_group1(abc1=(a.transpose(0, 1).contiguous().transpose(0, 1), b, c)),    # M-major A
         "group 1: A must be contiguous along its last"),
        (with_group1(perm1=(sfa_p.contiguous(), sfb_p)), "group 1: sfa_permuted is not a permuted view"),
        (with_group1(abc1=(a, b, c.to(torch.bfloat16))), "group 1: C is torch.bfloat16"),
        (with_group1(abc1=(a.view(torch.uint8), b, c)), "group 1: A is torch.uint8"),
        (with_group1(size1=(72, 256, 256, 1)), "do not match its size"),
        (with_group1(size1=(72, 256, 128, 2)), "L=2"),
        (with_group1(perm1=(sfa_p, sfb_p.to("meta"))), "group 1: sfb_permuted is on meta"),
        ((abc, scales, permuted[:1], sizes), "one size per group"),
        (([], [], [], []), "one size per group"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            cb.grouped_arguments(bad, "nvfp4")


def test_group_structs_carry_every_group():
    data = group_data([80, 128, 256], [384, 256, 128], [256, 512, 128])
    groups = cb.grouped_arguments(data, "nvfp4")
    call = cb.grouped_call(groups, sm_count=148)
    assert (call.args.count, call.args.sm_count, call.args.alpha) == (3, 148, 1.0)
    for g, q in enumerate(groups):
        st = call.args.groups[g]
        for f, _ in cb.GroupStruct._fields_:
            assert getattr(st, f) == getattr(q, f), (g, f)
    # The struct array the pointer designates is the one the call keeps alive.
    assert ctypes.addressof(call.groups) == ctypes.cast(call.args.groups, ctypes.c_void_p).value


# ------------------------------------------------------------------------------- limits, registration

def test_grouped_variants_are_registered_for_group_gemm_only():
    ks = all_kernels()
    for name in GROUPED:
        k = ks[name]
        assert k.problems == (GROUP_GEMM,) and k.formats == ("nvfp4",)
        assert k.archs == (("sm_120a",) if name.startswith("sm120") else ("sm_100a",))
        assert "does not compute gemm problems" in k.unsupported_reason(GEMM, "nvfp4", B200)
        assert k.unsupported_reason(GROUP_GEMM, "nvfp4", CPU) is not None
    assert ks["sm100-nvfp4-grouped"].unavailable_reason(Target("cuda", 0, (9, 0), "NVIDIA H200")) == \
        "needs sm_100; this GPU is sm_90"
    assert ks["sm100-nvfp4"].problems == (GEMM,)


@pytest.mark.parametrize("ms,ns,ks,reason", [
    ([80, 176], [4096, 4096], [7168, 7168], None),
    ([40, 76], [7168, 7168], [2048, 2048], None),
    ([64, 72], [128, 100], [256, 256], "group 1 (72x100x256): N=100 is not a multiple of 8"),
    ([64, 72], [128, 128], [256, 48], "group 1 (72x128x48): K=48 is not a multiple of 32"),
])
def test_grouped_can_implement(ms, ns, ks, reason):
    # Only the sizes are read: a tuple with the sizes alone stands in for the inputs.
    problem = Problem(Shape(ms[0], ns[0], ks[0]), NVFP4, ([], [], [], [(m, n, k, 1) for m, n, k in zip(ms, ns, ks)]),
                      kind=GROUP_GEMM)
    for name in GROUPED:
        got = all_kernels()[name].can_implement(problem)
        assert got == reason if reason is None else got.startswith(reason)


class FakeGroupedLibrary:
    """Stands in for a built grouped library: a recognisable image, and a record of every run."""

    def __init__(self, code=0):
        self.calls, self.packed, self.code = [], 0, code

    def pack(self, config, call):
        self.packed += 1
        call.host_image = torch.arange(32, dtype=torch.uint8) + call.args.count
        return call.host_image

    def can_implement(self, config, call):
        return None

    def workspace_size(self, config, call):
        return 256

    def status(self, code):
        return f"status {code}"

    def runner(self, config):
        def run(args_ref, host_image, device_image, workspace, stream):
            args = ctypes.cast(args_ref, ctypes.POINTER(cb.GroupedArgsStruct)).contents
            groups = [{f: getattr(args.groups[g], f) for f, _ in cb.GroupStruct._fields_} for g in range(args.count)]
            self.calls.append((config, args.count, args.sm_count, groups, host_image, device_image, workspace, stream))
            return self.code
        return run


def _fake(monkeypatch, code=0) -> FakeGroupedLibrary:
    fake = FakeGroupedLibrary(code)
    monkeypatch.setattr(cb, "load_library", lambda name: fake)
    monkeypatch.setattr(cb, "current_stream", lambda device: 4321)
    monkeypatch.setattr(cb, "sm_count", lambda device: 170)
    return fake


def test_prepared_run_returns_every_groups_c_and_packs_once_per_input_set(monkeypatch):
    fake = _fake(monkeypatch)
    data = group_data([96, 128], [128, 256], [128, 512], seed=1)
    other = group_data([96, 128], [128, 256], [128, 512], seed=2)
    fn = all_kernels()["sm100-nvfp4-grouped"].prepare(group_problem(data))
    packed_at_prepare = fake.packed
    for d in (data, data, other, data):
        out = fn(d)
        assert len(out) == 2 and all(o is c for o, (_, _, c) in zip(out, d[0]))
    assert fake.packed == packed_at_prepare + 2            # two distinct input sets
    config, count, sms, groups, host, device, workspace, stream = fake.calls[0]
    assert (config, count, sms, stream) == ("sm100_nvfp4_grouped_f16_128x128x256", 2, 170, 4321)
    want = cb.grouped_arguments(data, "nvfp4")
    assert groups == [{f: getattr(q, f) for f, _ in cb.GroupStruct._fields_} for q in want]
    assert host and device and workspace and host != device   # the image's host and device copies
    assert fake.calls[2][3][0]["a"] == other[0][0][0].data_ptr()
    assert fake.calls[3][4:6] == fake.calls[0][4:6]          # the first input set's image, reused


@pytest.mark.gpu
def test_prepared_run_on_a_gpu_reads_cuda_tensors_and_copies_the_image_there(monkeypatch):
    """The competition's first benchmark case on the GPU: addresses of its CUDA tensors, image copied there."""
    fake = _fake(monkeypatch)
    made = []
    real_call = cb.grouped_call
    monkeypatch.setattr(cb, "grouped_call", lambda *args, **kw: made.append(real_call(*args, **kw)) or made[-1])
    ms = [80, 176, 128, 72, 64, 248, 96, 160]
    data = generate_input("nvfp4_group_gemm", device="cuda", m=ms, n=[4096] * 8, k=[7168] * 8, g=8, seed=1111)
    fn = all_kernels()["sm100-nvfp4-grouped"].prepare(group_problem(data))
    out = fn(data)
    assert [o.data_ptr() for o in out] == [c.data_ptr() for _, _, c in data[0]]
    call = made[-1]
    assert call.device_image.device.type == "cuda" and torch.equal(call.device_image.cpu(), call.host_image)
    groups = fake.calls[0][3]
    assert [g["sfa"] for g in groups] == [sfa_p.data_ptr() for sfa_p, _ in data[2]]
    assert [g["m"] for g in groups] == ms


def test_prepared_run_raises_the_status(monkeypatch):
    _fake(monkeypatch, code=7)
    data = group_data([64], [128], [256])
    fn = all_kernels()["sm120-nvfp4-grouped"].prepare(group_problem(data))
    with pytest.raises(RuntimeError, match=r"sm120-nvfp4-grouped \(sm120_nvfp4_grouped_f16_128x128x128\): status 7"):
        fn(data)


# ------------------------------------------------------------------------- compiled (nvcc, session)

@pytest.fixture(scope="session")
def grouped_libraries(cutlass_builds):
    return {name: cb.CutlassGroupedLibrary(str(cutlass_builds[name])) for name in GROUPED}


@pytest.mark.nvcc
@pytest.mark.slow
@pytest.mark.cutlass_build(*GROUPED)
def test_library_host_entry_points_on_the_cpu(grouped_libraries):
    """The built libraries' pack, CUTLASS's can_implement and workspace size, run on the CPU."""
    data = group_data([80, 176, 40], [4096, 4096, 512], [7168, 7168, 256])
    for name, lib in grouped_libraries.items():
        config = cb.VARIANTS_BY_NAME[name].tiles[0].name
        call = cb.grouped_call(cb.grouped_arguments(data, "nvfp4"), sm_count=148)
        image = lib.pack(config, call)
        assert image.numel() > 0 and image.numel() % 16 == 0 and bool(image.any())
        assert lib.can_implement(config, call) is None, name
        assert lib.workspace_size(config, call) >= 0
        # Misaligned for the kernel (legal for the format): 16-byte rows are needed for A, B and D.
        for field, value in (("k", 48), ("n", 100)):
            bad = cb.grouped_call(cb.grouped_arguments(data, "nvfp4"), sm_count=148)
            setattr(bad.groups[2], field, value)
            if field == "k":
                bad.groups[2].lda = bad.groups[2].ldb = value
            else:
                bad.groups[2].ldd = value
            lib.pack(config, bad)
            assert lib.can_implement(config, bad) is not None, (name, field)
