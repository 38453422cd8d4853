"""Bit-exact codec tests: e2m1 and e8m0 value tables, rounding ties, packing, quantize/dequantize."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from fp4bench import codecs
from fp4bench.formats import E2M1_MAGNITUDES, GEMM_FORMATS, MXFP4, MXFP8, NVFP4, OPERAND_FORMATS, gemm_format


def e2m1_value_from_bits(code: int) -> float:
    """Independent e2m1 decoder from the bit fields: sign, 2-bit exponent (bias 1), 1-bit mantissa."""
    sign = -1.0 if code & 0x8 else 1.0
    exp = (code >> 1) & 0x3
    man = code & 0x1
    if exp == 0:
        return sign * man * 0.5            # subnormal: 0.m * 2^(1-1)
    return sign * (1 + man / 2) * 2.0 ** (exp - 1)


def test_e2m1_value_table_all_16_codes():
    codes = torch.arange(16, dtype=torch.uint8)
    got = codecs.decode_e2m1(codes).tolist()
    expected = [e2m1_value_from_bits(c) for c in range(16)]
    assert got == expected
    assert got[:8] == list(E2M1_MAGNITUDES)
    # -0 keeps its sign bit
    assert math.copysign(1.0, got[8]) == -1.0


def test_e2m1_encode_roundtrips_every_code():
    codes = torch.arange(16, dtype=torch.uint8)
    assert torch.equal(codecs.encode_e2m1(codecs.decode_e2m1(codes)), codes)


def nearest_even_reference(x: float) -> int:
    """Brute force: the nearest e2m1 magnitude, ties to the code with mantissa bit 0; saturating."""
    a = min(abs(x), 6.0)
    best = min(range(8), key=lambda c: (abs(E2M1_MAGNITUDES[c] - a), c & 1))
    return best | (0x8 if math.copysign(1.0, x) < 0 else 0)


@pytest.mark.parametrize("tie,expected", [
    (0.25, 0.0), (0.75, 1.0), (1.25, 1.0), (1.75, 2.0), (2.5, 2.0), (3.5, 4.0), (5.0, 4.0),
])
def test_e2m1_rounding_ties_go_to_even(tie, expected):
    for sign in (1.0, -1.0):
        code = codecs.encode_e2m1(torch.tensor([sign * tie]))
        assert codecs.decode_e2m1(code).item() == sign * expected


def test_e2m1_encode_matches_brute_force_on_random_values():
    x = torch.cat([torch.randn(5000) * 3, torch.rand(2000) * 16 - 8,
                   torch.tensor([0.0, -0.0, 6.0, -6.0, 7.0, 1e6, float("inf"), float("-inf")])])
    got = codecs.encode_e2m1(x).tolist()
    expected = [nearest_even_reference(v) for v in x.tolist()]
    assert got == expected


def test_e2m1_encode_rejects_nan():
    with pytest.raises(ValueError):
        codecs.encode_e2m1(torch.tensor([1.0, float("nan")]))


def test_pack_low_nibble_is_element_zero_and_roundtrips():
    codes = torch.randint(0, 16, (7, 64), dtype=torch.uint8)
    packed = codecs.pack_e2m1(codes)
    assert packed.shape == (7, 32)
    assert torch.equal(packed & 0xF, codes[:, 0::2])
    assert torch.equal(packed >> 4, codes[:, 1::2])
    assert torch.equal(codecs.unpack_e2m1(packed.view(torch.float4_e2m1fn_x2)), codes)


def test_e8m0_value_table_every_code():
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    got = codecs.decode_e8m0(codes)
    for c in range(255):
        assert got[c].item() == 2.0 ** (c - 127), c
    assert math.isnan(got[255].item())
    assert got[0].item() == 2.0 ** -127 and got[0].item() > 0
    # torch's own e8m0 dtype agrees on every code
    torch_values = codes.view(torch.float8_e8m0fnu).float()
    assert torch.equal(torch.isnan(torch_values), torch.isnan(got))
    assert torch.equal(torch_values[:255], got[:255])


def test_e8m0_encode_clamps_to_finite_range():
    exps = torch.tensor([-200, -127, -1, 0, 5, 127, 300])
    assert codecs.encode_e8m0(exps).tolist() == [0, 0, 126, 127, 132, 254, 254]


@pytest.mark.parametrize("fmt", [NVFP4, MXFP4, MXFP8], ids=lambda f: f.name)
def test_quantize_dequantize_is_exact_on_representable_values(fmt):
    rows, k = 33, 4 * fmt.block_size
    # Values already on the grid survive a round trip exactly.
    x = torch.randn(rows, k) * 4
    elems, scales = codecs.quantize(x, fmt)
    once = codecs.dequantize(elems, scales, fmt)
    elems2, scales2 = codecs.quantize(once, fmt)
    twice = codecs.dequantize(elems2, scales2, fmt)
    assert torch.equal(once, twice)
    assert elems.dtype == fmt.element.storage_dtype and scales.dtype == fmt.scale.dtype
    assert scales.shape == (rows, k // fmt.block_size)


@pytest.mark.parametrize("fmt", [NVFP4, MXFP4, MXFP8], ids=lambda f: f.name)
def test_quantize_error_is_bounded_by_the_element_grid(fmt):
    x = torch.randn(64, 8 * fmt.block_size)
    deq = codecs.dequantize(*codecs.quantize(x, fmt), fmt)
    blocks = x.reshape(64, -1, fmt.block_size)
    amax = blocks.abs().amax(-1, keepdim=True)
    err = (deq.reshape_as(blocks) - blocks).abs()
    # The MX shared exponent scales amax into [2^emax, 2^(emax+1)), and values past the element's max
    # saturate: up to 25% of amax for e2m1 (8 -> 6), 12.5% for e4m3 (512 -> 448). Half-steps of the grid
    # stay inside those bounds; NVFP4's amax/6 scale never saturates.
    bound = amax * (0.26 if fmt.element.name == "e2m1" else 0.13)
    assert (err <= bound).all()
    assert err.max() > 0  # random data is not on the grid: the test would notice a pass-through


def test_mx_scale_is_shared_exponent():
    x = torch.zeros(1, 32)
    x[0, 3] = 5.0      # amax 5 -> floor(log2 5) = 2, minus e2m1 emax 2 -> exponent 0
    x[0, 7] = -1.0
    _, scales = codecs.quantize(x, MXFP4)
    assert codecs.as_bytes(scales).item() == 127


def test_quantize_rejects_bad_k_and_nonfinite():
    with pytest.raises(ValueError, match="multiple"):
        codecs.quantize(torch.randn(4, 24), NVFP4)
    with pytest.raises(ValueError, match="finite"):
        codecs.quantize(torch.full((4, 32), float("inf")), MXFP4)


def test_registry_is_frozen_and_complete():
    assert set(OPERAND_FORMATS) == {"nvfp4", "mxfp4", "mxfp8", "bf16"}
    assert NVFP4.block_size == 16 and NVFP4.scale.dtype == torch.float8_e4m3fn
    assert MXFP4.block_size == 32 and MXFP4.scale.dtype == torch.float8_e8m0fnu
    assert MXFP8.element.name == "e4m3" and MXFP8.block_size == 32
    with pytest.raises(dataclasses.FrozenInstanceError):
        NVFP4.block_size = 32  # frozen
    with pytest.raises(TypeError):
        GEMM_FORMATS["x"] = None  # read-only mapping
    assert gemm_format("W4A8").k_multiple == 32
    assert gemm_format("nvfp4").compute_dtype == torch.float16
    with pytest.raises(KeyError, match="unknown format"):
        gemm_format("fp3")
