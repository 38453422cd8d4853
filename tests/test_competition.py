"""fp4bench.competition.generate_input against digests of the competition's own generate_input.

tests/fixtures/competition_digests.json holds, for every case of the four problems' task.yml files (tests and
benchmarks), a sha256 over the structure and every tensor's dtype, shape, stride, device type and bytes, as
produced ONCE by the competition's published reference.py run on the CPU (its "cuda" placements rewritten to
"cpu"); the fixture names the reference-kernels commit. A single differing byte fails its case.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
from pathlib import Path

import pytest
import torch

from fp4bench.competition import CASE_KEYS, PROBLEMS, generate_input
from fp4bench.layouts import from_competition

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "competition_digests.json").read_text())

# Same-width integer dtypes, so that a tensor's bytes can be read in index order whatever its dtype.
_SAME_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def digest(data) -> str:
    """sha256 over the nesting of tuples and lists, ints, and each tensor's metadata and bytes in index order."""
    h = hashlib.sha256()
    _feed(h, data)
    return h.hexdigest()


def _feed(h, x) -> None:
    if isinstance(x, torch.Tensor):
        h.update(f"tensor {x.dtype} {tuple(x.shape)} {x.stride()} {x.device.type}\n".encode())
        flat = x.detach().view(_SAME_WIDTH[x.element_size()]).reshape(-1).cpu().contiguous()
        # Zero-copy view of the tensor's memory; bytes(storage) would go element by element.
        h.update((ctypes.c_char * (flat.numel() * flat.element_size())).from_address(flat.data_ptr()))
    elif isinstance(x, (tuple, list)):
        h.update(f"{type(x).__name__} {len(x)}\n".encode())
        for item in x:
            _feed(h, item)
    elif isinstance(x, int):
        h.update(f"int {x}\n".encode())
    else:
        raise TypeError(f"digest does not cover {type(x).__name__}")


def _case_id(entry) -> str:
    case = ",".join(f"{k}{'x'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in entry["case"].items())
    return f"{entry['problem']}-{entry['kind']}-{case}"


@pytest.mark.parametrize("entry", FIXTURE["cases"], ids=_case_id)
def test_matches_competition_bytes_on_cpu(entry):
    data = generate_input(entry["problem"], device="cpu", **entry["case"])
    assert digest(data) == entry["sha256"]


def test_fixture_covers_every_problem():
    assert PROBLEMS == ("nvfp4_gemm", "nvfp4_gemv", "nvfp4_dual_gemm", "nvfp4_group_gemm")
    covered = {(e["problem"], e["kind"]) for e in FIXTURE["cases"]}
    assert covered == {(p, kind) for p in PROBLEMS for kind in ("tests", "benchmarks")}
    for e in FIXTURE["cases"]:
        assert tuple(e["case"]) == CASE_KEYS[e["problem"]]


def test_digest_sees_one_flipped_byte():
    data = generate_input("nvfp4_group_gemm", device="cpu", m=[72], n=[128], k=[256], g=1, seed=1)
    before = digest(data)
    permuted_sfa = data[2][0][0].view(torch.uint8)
    # Row 3 * 32 + 31 = 127 of 72, last scale column: a padding byte, which no value check would read.
    permuted_sfa[31, 3, 0, 3, 3, 0] ^= 1
    assert digest(data) != before


def test_grouped_structure_and_padding_on_cpu():
    abc, scales, permuted, sizes = generate_input(
        "nvfp4_group_gemm", device="cpu", m=[72, 128], n=[256, 128], k=[256, 512], g=2, seed=1111
    )
    assert sizes == [(72, 256, 256, 1), (128, 128, 512, 1)]
    a, b, c = abc[0]
    assert (a.shape, a.stride(), a.dtype) == ((72, 128, 1), (128, 1, 72 * 128), torch.float4_e2m1fn_x2)
    assert (c.shape, c.dtype) == ((72, 256, 1), torch.float16)
    sfa, _ = scales[0]
    assert (sfa.shape, sfa.dtype) == ((72, 16, 1), torch.float8_e4m3fn)
    assert permuted[0][0].shape == (32, 4, 1, 4, 4, 1)
    # Padding rows 72..127 keep the competition's pre-fill draw (1.0 or 2.0: bytes 0x38, 0x40), not zeros.
    padding = from_competition(permuted[0][0], 128, 16)[72:].view(torch.uint8)
    assert set(padding.unique().tolist()) == {0x38, 0x40}


@pytest.mark.parametrize(
    "problem,case,message",
    [
        ("nvfp4_gemmm", {"m": 1, "n": 1, "k": 64, "l": 1, "seed": 1}, "unknown competition problem"),
        ("nvfp4_gemm", {"m": 128, "n": 128, "k": 256, "seed": 1}, "missing l"),
        ("nvfp4_gemv", {"m": 128, "n": 1, "k": 256, "l": 1, "seed": 1}, "unexpected n"),
        ("nvfp4_group_gemm", {"m": [128], "n": [128], "k": [256], "l": 1, "seed": 1}, "missing g; unexpected l"),
        ("nvfp4_group_gemm", {"m": [128, 64], "n": [128], "k": [256], "g": 2, "seed": 1}, "n has 1 entries"),
        ("nvfp4_dual_gemm", {"m": 128, "n": 128, "k": 256.0, "l": 1, "seed": 1}, "k must be an integer"),
    ],
)
def test_bad_cases_raise_one_line_value_error(problem, case, message):
    with pytest.raises(ValueError, match=message) as raised:
        generate_input(problem, device="cpu", **case)
    assert "\n" not in str(raised.value)


@pytest.mark.gpu
def test_devices_on_cuda():
    a, b, sfa, sfb, sfa_permuted, sfb_permuted, c = generate_input("nvfp4_gemm", m=128, n=256, k=256, l=1, seed=1)
    assert {t.device.type for t in (a, b, sfa, sfb, sfa_permuted, sfb_permuted, c)} == {"cuda"}
    abc, scales, permuted, _ = generate_input("nvfp4_group_gemm", m=[72], n=[128], k=[256], g=1, seed=1)
    # The competition draws the grouped problem's scales on the CPU generator and hands them over there.
    assert {t.device.type for t in scales[0]} == {"cpu"}
    assert {t.device.type for t in (*abc[0], *permuted[0])} == {"cuda"}
