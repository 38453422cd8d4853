"""Bit-exact codecs for the element and scale encodings in `fp4bench.formats`.

Conventions:
  * e2m1 codes are 4-bit integers: bit 3 sign, bits 2..1 exponent (bias 1), bit 0 mantissa.
  * Two e2m1 codes pack into one byte with element 0 in the low nibble (torch.float4_e2m1fn_x2).
  * e8m0 codes are biased exponents: value 2^(code-127); 0xFF is NaN.
  * `quantize` works on 2-D [rows, K] tensors with K a multiple of the block size; scales come back
    row-major [rows, K // block] in the format's scale dtype. Batched tensors are the caller's loop.
All functions run on CPU and CUDA tensors alike.
"""

from __future__ import annotations

import functools

import torch

from .formats import (
    E2M1_MAGNITUDES,
    E8M0_BIAS,
    E8M0_NAN_CODE,
    OperandFormat,
)


@functools.lru_cache(maxsize=None)
def _table(device: torch.device) -> torch.Tensor:
    # Cached per device: building it from a Python list is a synchronous host-to-device copy, which would
    # stall every dequantization (and the timings of anything built on it) on a GPU.
    mags = torch.tensor(E2M1_MAGNITUDES, dtype=torch.float32, device=device)
    return torch.cat([mags, -mags])


# ---------------------------------------------------------------------------------------------
# e2m1
# ---------------------------------------------------------------------------------------------
def decode_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """4-bit codes (any integer dtype, values 0..15) -> float32 values."""
    return _table(codes.device)[codes.long() & 0xF]


def encode_e2m1(x: torch.Tensor) -> torch.Tensor:
    """float -> 4-bit e2m1 codes (uint8), round-to-nearest-even, saturating to +-6.

    Infinities saturate; NaN has no e2m1 encoding and raises ValueError.
    """
    x = x.float()
    if torch.isnan(x).any():
        raise ValueError("e2m1 has no NaN encoding")
    a = x.abs()
    # Each threshold is the midpoint between neighbouring magnitudes; '>' where the tie goes down to
    # the even code, '>=' where it goes up to the even code.
    code = (
        (a > 0.25).to(torch.uint8)
        + (a >= 0.75).to(torch.uint8)
        + (a > 1.25).to(torch.uint8)
        + (a >= 1.75).to(torch.uint8)
        + (a > 2.5).to(torch.uint8)
        + (a >= 3.5).to(torch.uint8)
        + (a > 5.0).to(torch.uint8)
    )
    sign = torch.signbit(x).to(torch.uint8) << 3
    return code | sign


def pack_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """[..., 2n] codes -> [..., n] uint8 bytes, element 0 in the low nibble."""
    if codes.shape[-1] % 2:
        raise ValueError("packing e2m1 needs an even number of values in the last dimension")
    c = codes.to(torch.uint8)
    return (c[..., 0::2] & 0xF) | ((c[..., 1::2] & 0xF) << 4)


def unpack_e2m1(packed: torch.Tensor) -> torch.Tensor:
    """[..., n] bytes (uint8/int8/float4_e2m1fn_x2) -> [..., 2n] uint8 codes."""
    b = as_bytes(packed)
    lo = b & 0xF
    hi = b >> 4
    return torch.stack([lo, hi], dim=-1).flatten(-2)


def as_bytes(t: torch.Tensor) -> torch.Tensor:
    """Reinterpret a 1-byte tensor (fp4x2, fp8, int8) as uint8 without copying."""
    if t.element_size() != 1:
        raise TypeError(f"expected a 1-byte dtype, got {t.dtype}")
    return t if t.dtype == torch.uint8 else t.view(torch.uint8)


# ---------------------------------------------------------------------------------------------
# e8m0 and e4m3
# ---------------------------------------------------------------------------------------------
def decode_e8m0(codes: torch.Tensor) -> torch.Tensor:
    """uint8 biased exponents -> float32 2^(code-127); 0xFF -> NaN."""
    c = as_bytes(codes).to(torch.int32)
    out = torch.ldexp(torch.ones_like(c, dtype=torch.float32), c - E8M0_BIAS)
    return torch.where(c == E8M0_NAN_CODE, torch.full_like(out, float("nan")), out)


def encode_e8m0(exponent: torch.Tensor) -> torch.Tensor:
    """Unbiased integer exponents -> uint8 codes, clamped to the finite range [-127, 127]."""
    return (exponent.to(torch.int32).clamp(-E8M0_BIAS, E8M0_BIAS) + E8M0_BIAS).to(torch.uint8)


def decode_scales(scales: torch.Tensor, fmt: OperandFormat) -> torch.Tensor:
    """Scale tensor of `fmt` (its dtype, or raw uint8 bytes) -> float32."""
    if fmt.scale is None:
        raise ValueError(f"{fmt.name} has no scales")
    if fmt.scale.power_of_two:
        return decode_e8m0(scales)
    return as_bytes(scales).view(fmt.scale.dtype).float()


def decode_elements(stored: torch.Tensor, fmt: OperandFormat) -> torch.Tensor:
    """Stored elements [..., storage_cols] -> float32 [..., K]."""
    if fmt.element.name == "e2m1":
        return decode_e2m1(unpack_e2m1(stored))
    if fmt.element.name == "e4m3":
        return as_bytes(stored).view(torch.float8_e4m3fn).float()
    return stored.float()


# ---------------------------------------------------------------------------------------------
# quantize / dequantize
# ---------------------------------------------------------------------------------------------
def _shared_exponent(amax: torch.Tensor, emax: int) -> torch.Tensor:
    """OCP MX shared exponent: floor(log2(amax)) - emax of the element type; 0 for all-zero blocks."""
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    e = torch.floor(torch.log2(safe)).to(torch.int32) - emax
    return torch.where(amax > 0, e, torch.zeros_like(e))


def quantize(x: torch.Tensor, fmt: OperandFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """[rows, K] float -> (elements in fmt's storage dtype, scales [rows, K // block] in its scale dtype).

    NVFP4: scale = amax / 6 rounded to e4m3. MX formats: scale = 2^(floor(log2 amax) - emax).
    Non-finite input raises ValueError.
    """
    if not fmt.block_scaled:
        raise ValueError(f"{fmt.name} is not block-scaled")
    if x.dim() != 2:
        raise ValueError("quantize expects a 2-D [rows, K] tensor")
    rows, k = x.shape
    if k % fmt.block_size:
        raise ValueError(f"K={k} is not a multiple of the {fmt.name} block size {fmt.block_size}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError("quantize needs finite input")
    blocks = x.reshape(rows, k // fmt.block_size, fmt.block_size)
    amax = blocks.abs().amax(dim=-1)
    if fmt.scale.power_of_two:
        scale_codes = encode_e8m0(_shared_exponent(amax, fmt.element.emax))
        scales = scale_codes.view(fmt.scale.dtype)
    else:
        scales = (amax / fmt.element.max_value).clamp(max=float(torch.finfo(fmt.scale.dtype).max))
        scales = scales.to(fmt.scale.dtype)
    s = decode_scales(scales, fmt).unsqueeze(-1)
    scaled = torch.where(s > 0, blocks / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(blocks))
    scaled = scaled.reshape(rows, k)
    if fmt.element.name == "e2m1":
        elements = pack_e2m1(encode_e2m1(scaled)).view(fmt.element.storage_dtype)
    else:
        lim = fmt.element.max_value
        elements = scaled.clamp(-lim, lim).to(fmt.element.storage_dtype)
    return elements, scales


def dequantize(elements: torch.Tensor, scales: torch.Tensor | None, fmt: OperandFormat) -> torch.Tensor:
    """(elements [rows, storage_cols], scales [rows, >= K // block]) -> float32 [rows, K].

    Scale columns beyond K // block (layout padding) are ignored.
    """
    values = decode_elements(elements, fmt)
    if not fmt.block_scaled:
        return values
    rows, k = values.shape
    nblk = k // fmt.block_size
    s = decode_scales(scales, fmt)[:rows, :nblk]
    return (values.reshape(rows, nblk, fmt.block_size) * s.unsqueeze(-1)).reshape(rows, k)

