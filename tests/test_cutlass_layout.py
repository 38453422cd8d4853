"""CUTLASS's scale-factor layout equals fp4bench's blocked layout, bit for bit (needs nvcc, no GPU).

A host-only program (kernels/cutlass/layout_probe.cpp), built against the same CUTLASS headers and
the same config table as the kernels, prints the offset CUTLASS's Sm1xxBlkScaledConfig gives every
scale (row, scale column, batch). Each offset must equal `layouts.blocked_offset` plus the batch's
block, and reading the competition's scale storage at those offsets must give back the scales.
The same build checks the C ABI struct against its ctypes mirror and that the CUTLASS header overlay
(the SM120 shared-memory alignment fix) is the header the compiler actually read.
"""

from __future__ import annotations

import ctypes
import subprocess

import pytest
import torch

from fp4bench import build as B
from fp4bench.formats import GEMM_FORMATS
from fp4bench.kernels import cutlass_blackwell as cb
from fp4bench.layouts import blocked_numel, blocked_offset, competition_blocked_bytes, to_competition

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


def test_ctypes_struct_matches_the_c_abi(probe):
    abi = dict(line.split() for line in run_probe(probe, "abi"))
    assert int(abi.pop("sizeof")) == ctypes.sizeof(cb.GemmArgsStruct)
    assert set(abi) == {name for name, _ in cb.GemmArgsStruct._fields_}
    for name, offset in abi.items():
        assert getattr(cb.GemmArgsStruct, name).offset == int(offset), name


def test_compiler_read_the_patched_sm120_header(probe):
    """The depfile of the probe (which includes the SM120 mainloop) names the overlay's copy, not the wheel's."""
    include = B.cutlass_include_dir()
    overlay = B.header_overlay(include)
    depfile = (B.cache_root() / (f"{cb.LAYOUT_PROBE.name}-{B.HOST_TARGET}-"
                                 f"{B.build_key(cb.LAYOUT_PROBE, B.Toolchain.detect(cb.LAYOUT_PROBE))}")
               / "obj" / "layout_probe.o.d").read_text()
    if overlay is None:
        pytest.skip(f"CUTLASS {B.cutlass_version(include)} already has the alignment fix; no overlay")
    assert str(overlay / B.SM120_MAINLOOP_HEADER) in depfile
    assert str(include / B.SM120_MAINLOOP_HEADER) not in depfile
    assert (overlay / B.SM120_MAINLOOP_HEADER).read_text().count("alignas(16) cute::ArrayEngine<ElementSF") == 2
