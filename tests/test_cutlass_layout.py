"""CUTLASS's scale-factor layout equals fp4bench's blocked layout, bit for bit (needs nvcc, no GPU).

A host-only program (kernels/cutlass/layout_probe.cpp), built against the same CUTLASS headers and
the same config table as the kernels, prints the offset CUTLASS's Sm1xxBlkScaledConfig gives every
scale (row, scale column, batch). Each offset must equal `layouts.blocked_offset` plus the batch's
block, and reading the competition's scale storage at those offsets must give back the scales.
For the grouped kernels the probe packs their argument image (the library's own `pack`) and reads every
group back through CUTLASS's types: shapes, pointers, strides, and per-group scale layouts that address
the competition's permuted scale bytes of that group.
The same build checks the C ABI structs against their ctypes mirrors and that the CUTLASS header overlay
(the SM120 shared-memory alignment fix) holds the headers the compiler actually read.
"""

from __future__ import annotations

import ctypes
import subprocess

import pytest
import torch

from fp4bench import build as B
from fp4bench.competition import generate_input
from fp4bench.formats import GEMM_FORMATS
from fp4bench.kernels import cutlass_blackwell as cb
from fp4bench.layouts import (
    blocked_numel,
    blocked_offset,
    competition_blocked_bytes,
    from_blocked,
    to_competition,
)

# The probe is compiled once a session, in the background while the rest of the suite runs (conftest.py).
pytestmark = [pytest.mark.nvcc, pytest.mark.slow, pytest.mark.cutlass_build(cb.LAYOUT_PROBE.name)]

# (config, operand format of A and B) for every distinct scale configuration the kernels use.
PROBED = [
    ("sm120_nvfp4_f16_128x128x256", "nvfp4"),
    ("sm120_mxfp4_bf16_128x128x256", "mxfp4"),
    ("sm120_w4a8_bf16_128x128x128", "w4a8"),
    ("sm120_mxfp8_bf16_128x128x128", "mxfp8"),
    ("sm100_nvfp4_f16_128x128x256", "nvfp4"),
    ("sm100_w4a8_bf16_128x128x128", "w4a8"),
    ("sm100_mxfp8_bf16_128x128x128", "mxfp8"),
]
# M, N off the 128-row tiles; K giving 1, 2, 3, 4, 5 and many scale columns (padding to 4 and beyond).
SHAPES = [(128, 256, 256, 1), (1, 130, 64, 1), (200, 72, 128, 2), (257, 384, 192, 1), (96, 300, 320, 3),
          (128, 128, 2048, 1)]


@pytest.fixture(scope="session")
def probe(cutlass_builds):
    return str(cutlass_builds[cb.LAYOUT_PROBE.name])


def run_probe(probe, *args) -> list[str]:
    return subprocess.run([probe, *map(str, args)], capture_output=True, text=True, check=True).stdout.splitlines()


def parse(lines: list[str]) -> dict[str, tuple[tuple[int, int, int, int], torch.Tensor]]:
    out = {}
    for head, body in zip(lines[0::2], lines[1::2]):
        name, rows, cols, l, cosize = head.split()
        offsets = torch.tensor([int(x) for x in body.split()], dtype=torch.int64)
        out[name] = ((int(rows), int(cols), int(l), int(cosize)), offsets.reshape(int(l), int(rows), int(cols)))
    return out


@pytest.mark.parametrize("config,fmt_name", PROBED)
@pytest.mark.parametrize("m,n,k,l", SHAPES)
def test_cutlass_scale_offsets_equal_blocked_layout(probe, config, fmt_name, m, n, k, l):
    fmt = GEMM_FORMATS[fmt_name]
    block = fmt.a.block_size
    k = max(k, block) // block * block
    got = parse(run_probe(probe, config, m, n, k, l))
    gen = torch.Generator().manual_seed(m * 7 + n * 3 + k + l)
    for operand, rows in (("SFA", m), ("SFB", n)):
        (r_, cols, l_, cosize), offsets = got[operand]
        assert (r_, cols, l_) == (rows, k // block, l)
        per_batch = blocked_numel(rows, cols)
        assert cosize == per_batch * l
        want = torch.tensor([[[b * per_batch + blocked_offset(r, c, rows, cols) for c in range(cols)]
                              for r in range(rows)] for b in range(l)], dtype=torch.int64)
        assert torch.equal(offsets, want), f"{config} {operand} {rows}x{cols}x{l}"
        # And the competition's storage read at CUTLASS's offsets gives back every scale.
        scales = torch.randint(0, 256, (rows, cols, l), dtype=torch.int16, generator=gen).to(torch.uint8)
        storage = competition_blocked_bytes(to_competition(scales)).reshape(-1)
        assert torch.equal(storage[offsets].permute(1, 2, 0), scales)


def test_probe_rejects_bad_arguments(probe):
    res = subprocess.run([probe, "no_such_config", "1", "1", "64", "1"], capture_output=True, text=True)
    assert res.returncode == 2 and "unknown config" in res.stderr
    res = subprocess.run([probe, "sm120_nvfp4_f16_128x128x256", "128", "128", "40", "1"], capture_output=True, text=True)
    assert res.returncode == 2 and "not a multiple" in res.stderr


def test_ctypes_structs_match_the_c_abi(probe):
    mirrors = {"Fp4benchGemmArgs": cb.GemmArgsStruct, "Fp4benchGroup": cb.GroupStruct,
               "Fp4benchGroupedGemmArgs": cb.GroupedArgsStruct}
    abi: dict[str, dict[str, int]] = {}
    for line in run_probe(probe, "abi"):
        struct, field, value = line.split()
        abi.setdefault(struct, {})[field] = int(value)
    assert set(abi) == set(mirrors)
    for struct, mirror in mirrors.items():
        fields = abi[struct]
        assert fields.pop("sizeof") == ctypes.sizeof(mirror), struct
        assert set(fields) == {name for name, _ in mirror._fields_}, struct
        for name, offset in fields.items():
            assert getattr(mirror, name).offset == offset, (struct, name)


# The grouped configs and the competition's group_gemm cases: its task.yml tests (M off the 128-row
# tiles, several K) and its benchmark sizes (scale matrices of many tiles).
GROUPED_CONFIGS = ["sm120_nvfp4_grouped_f16_128x128x128", "sm100_nvfp4_grouped_f16_128x128x256"]
GROUP_CASES = [
    ([40, 56, 384, 512], [512, 384, 256, 128], [256, 256, 256, 256]),
    ([80, 128, 256], [384, 256, 128], [256, 512, 128]),
    ([1, 200], [8, 72], [32, 96]),
    ([80, 176], [4096, 4096], [7168, 7168]),
]


def blocked_offsets(rows: int, cols: int) -> torch.Tensor:
    """[rows, cols] byte offsets of every scale in the blocked layout: `layouts.from_blocked` of the positions
    themselves (what blocked_offset gives, fast enough for the benchmark's 4096 x 448 scales)."""
    return from_blocked(torch.arange(blocked_numel(rows, cols), dtype=torch.int64), rows, cols)


def test_blocked_offsets_helper_agrees_with_blocked_offset():
    for rows, cols in ((1, 2), (130, 7), (257, 12)):
        want = torch.tensor([[blocked_offset(r, c, rows, cols) for c in range(cols)] for r in range(rows)])
        assert torch.equal(blocked_offsets(rows, cols), want)


def parse_groups(lines: list[str]) -> list[dict]:
    """The probe's `group` output: per group its stored fields and SFA/SFB offsets."""
    head, *rest = lines
    count = int(head.split()[1])
    groups = []
    for g in range(count):
        fields = rest[5 * g].split()
        assert fields[0] == "GROUP" and int(fields[1]) == g
        values = list(map(int, fields[2:]))
        groups.append({"shape": tuple(values[:3]), "pointers": tuple(values[3:8]), "ld": tuple(values[8:]),
                       **parse(rest[5 * g + 1:5 * g + 5])})
    return groups


@pytest.mark.parametrize("config", GROUPED_CONFIGS)
@pytest.mark.parametrize("ms,ns,ks", GROUP_CASES)
def test_grouped_argument_image_reads_the_competitions_scale_bytes(probe, config, ms, ns, ks):
    """Per group, the layouts in the packed argument image address the competition's permuted scales.

    The probe packs the very image the library hands CUTLASS, then reads every group back through CUTLASS's
    types: shapes, pointers and leading dimensions as given, and each group's SFA/SFB layout mapping
    (row, scale column) to the byte of that group's blocked scales that holds it.
    """
    data = generate_input("nvfp4_group_gemm", device="cpu", m=ms, n=ns, k=ks, g=len(ms), seed=sum(ks))
    # Leading dimensions off the packed values (padded rows), to see that each group's own is stored.
    lds = [(k + 64 * g, k + 32 * g, n + 8 * g) for g, (n, k) in enumerate(zip(ns, ks))]
    specs = [",".join(map(str, (m, n, k, *ld))) for m, n, k, ld in zip(ms, ns, ks, lds)]
    groups = parse_groups(run_probe(probe, "group", config, *specs))
    assert len(groups) == len(ms)
    for g, (got, (sfa, sfb), (sfa_p, sfb_p)) in enumerate(zip(groups, data[1], data[2])):
        m, n, k = ms[g], ns[g], ks[g]
        assert got["shape"] == (m, n, k)
        base = (g + 1) << 32
        assert got["pointers"] == tuple(base + (i << 28) for i in range(5))
        assert got["ld"] == lds[g]
        cols = k // 16
        for operand, rows, scales, permuted in (("SFA", m, sfa, sfa_p), ("SFB", n, sfb, sfb_p)):
            (r_, c_, l_, cosize), offsets = got[operand]
            assert (r_, c_, l_, cosize) == (rows, cols, 1, blocked_numel(rows, cols)), (g, operand)
            assert torch.equal(offsets[0], blocked_offsets(rows, cols)), (config, g, operand)
            # The competition's own bytes at those offsets are the group's scales.
            storage = competition_blocked_bytes(permuted).reshape(-1)
            assert torch.equal(storage[offsets[0]].view(torch.uint8), scales[:, :, 0].view(torch.uint8))


def test_probe_rejects_bad_groups(probe):
    res = subprocess.run([probe, "group", "no_such_config", "128,128,256,256,256,128"], capture_output=True, text=True)
    assert res.returncode == 2 and "unknown grouped config" in res.stderr
    res = subprocess.run([probe, "group", GROUPED_CONFIGS[0], "128,128,40,40,40,128"], capture_output=True, text=True)
    assert res.returncode == 2 and "multiple of 16" in res.stderr


def test_compiler_read_the_patched_sm120_header(probe):
    """The depfile of the probe (which includes the SM120 mainloop) names the overlay's copy, not the wheel's."""
    include = B.cutlass_include_dir()
    overlay = B.header_overlay(include)
    depfile = (B.cache_root() / (f"{cb.LAYOUT_PROBE.name}-{B.HOST_TARGET}-"
                                 f"{B.build_key(cb.LAYOUT_PROBE, B.Toolchain.detect(cb.LAYOUT_PROBE))}")
               / "obj" / "layout_probe.o.d").read_text()
    if overlay is None:
        pytest.skip(f"CUTLASS {B.cutlass_version(include)} already has the alignment fix; no overlay")
    # The probe instantiates the plain and the grouped SM120 mainloops: both headers come from the overlay.
    for header in B.SM120_MAINLOOP_HEADERS:
        assert str(overlay / header) in depfile, header
        assert str(include / header) not in depfile, header
        assert (overlay / header).read_text().count("alignas(16) cute::ArrayEngine<ElementSF") == 2, header
