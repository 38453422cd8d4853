"""The one source of truth for block-scaled number formats.

Every fact about a format (element encoding, scale encoding, values per scale, the dense dtype it
dequantizes to exactly) lives here, in frozen dataclasses. Other modules read these records; none
re-derives a block size, a bias or a dtype on its own.

Operand formats:
  NVFP4  e2m1 values, e4m3 scale, 16 values per scale; exact in fp16.
  MXFP4  e2m1 values, e8m0 scale (2^(e-127), 0xFF = NaN), 32 values per scale (OCP MX v1.0); exact in bf16.
  MXFP8  e4m3 values, e8m0 scale, 32 values per scale; the activations of W4A8, both operands of mxfp8.
  BF16   a dense (unscaled) operand; the activations of W4A16.

GEMM formats pair an A format with a B format and fix the output dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import torch

# e2m1: 1 sign bit, 2 exponent bits (bias 1), 1 mantissa bit; no inf, no NaN.
E2M1_MAGNITUDES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
E2M1_MAX = 6.0
E2M1_EMAX = 2  # 6 = 1.5 * 2^2
E4M3_MAX = 448.0
E4M3_EMAX = 8  # 448 = 1.75 * 2^8
E8M0_BIAS = 127
E8M0_NAN_CODE = 0xFF


@dataclass(frozen=True)
class ElementSpec:
    """How one element is stored."""

    name: str            # "e2m1", "e4m3", "bf16"
    bits: int
    max_value: float
    emax: int            # exponent of the largest binade; the MX shared exponent subtracts it
    storage_dtype: torch.dtype  # dtype of the stored tensor (fp4 packs two per byte)
    # The sign bits of one stored unit (every element packed in it): XOR with it negates the values exactly.
    sign_mask: int

    @property
    def per_byte(self) -> int:
        return 8 // self.bits if self.bits < 8 else 1


@dataclass(frozen=True)
class ScaleSpec:
    """How one block scale is stored."""

    name: str            # "e4m3" or "e8m0"
    dtype: torch.dtype
    power_of_two: bool   # e8m0 scales are pure powers of two


E2M1 = ElementSpec("e2m1", 4, E2M1_MAX, E2M1_EMAX, torch.float4_e2m1fn_x2, 0x88)
E4M3 = ElementSpec("e4m3", 8, E4M3_MAX, E4M3_EMAX, torch.float8_e4m3fn, 0x80)
BF16_ELEMENT = ElementSpec("bf16", 16, float(torch.finfo(torch.bfloat16).max), 127, torch.bfloat16, 0x8000)

SCALE_E4M3 = ScaleSpec("e4m3", torch.float8_e4m3fn, power_of_two=False)
SCALE_E8M0 = ScaleSpec("e8m0", torch.float8_e8m0fnu, power_of_two=True)


@dataclass(frozen=True)
class OperandFormat:
    """One GEMM operand's storage: elements, and (for block-scaled formats) one scale per block along K."""

    name: str
    element: ElementSpec
    scale: ScaleSpec | None
    block_size: int | None   # values per scale along K; None for a dense operand
    exact_dtype: torch.dtype  # the narrowest dense dtype that holds value * scale exactly

    @property
    def block_scaled(self) -> bool:
        return self.scale is not None

    @property
    def packed(self) -> bool:
        return self.element.per_byte > 1

    def storage_cols(self, k: int) -> int:
        """Columns of the stored element tensor for K logical columns."""
        return k // self.element.per_byte if self.packed else k

    def scale_cols(self, k: int) -> int:
        if self.block_size is None:
            return 0
        return k // self.block_size

    def bytes_for(self, rows: int, k: int) -> int:
        """Bytes of elements plus scales for a rows x K operand (the traffic floor of reading it once)."""
        elem = rows * k * self.element.bits // 8
        return elem + rows * self.scale_cols(k)


NVFP4 = OperandFormat("nvfp4", E2M1, SCALE_E4M3, 16, torch.float16)
MXFP4 = OperandFormat("mxfp4", E2M1, SCALE_E8M0, 32, torch.bfloat16)
MXFP8 = OperandFormat("mxfp8", E4M3, SCALE_E8M0, 32, torch.bfloat16)
BF16 = OperandFormat("bf16", BF16_ELEMENT, None, None, torch.bfloat16)

OPERAND_FORMATS = MappingProxyType({f.name: f for f in (NVFP4, MXFP4, MXFP8, BF16)})


@dataclass(frozen=True)
class GemmFormat:
    """A problem format: C[M, N, L] = A[M, K, L] @ B[N, K, L]^T with fp32 accumulation."""

    name: str
    a: OperandFormat
    b: OperandFormat
    out_dtype: torch.dtype
    description: str

    @property
    def k_multiple(self) -> int:
        """K must be a multiple of every operand's block size (and of 2 for packed fp4)."""
        mult = 2
        for op in (self.a, self.b):
            if op.block_size is not None:
                mult = max(mult, op.block_size)
        return mult

    @property
    def compute_dtype(self) -> torch.dtype:
        """A dense dtype in which both operands dequantize exactly (fp16 only when both allow it)."""
        if self.a.exact_dtype == torch.float16 and self.b.exact_dtype == torch.float16:
            return torch.float16
        return torch.bfloat16


GEMM_FORMATS = MappingProxyType({
    g.name: g
    for g in (
        # fp16 output is the competition's semantics.
        GemmFormat("nvfp4", NVFP4, NVFP4, torch.float16, "NVFP4 x NVFP4 -> fp16"),
        GemmFormat("nvfp4-bf16", NVFP4, NVFP4, torch.bfloat16, "NVFP4 x NVFP4 -> bf16"),
        # MX scales span 2^-127..2^127: bf16 output keeps the range.
        GemmFormat("mxfp4", MXFP4, MXFP4, torch.bfloat16, "MXFP4 x MXFP4 -> bf16"),
        GemmFormat("w4a8", MXFP8, MXFP4, torch.bfloat16, "MXFP8 activations x MXFP4 weights -> bf16"),
        GemmFormat("mxfp8", MXFP8, MXFP8, torch.bfloat16, "MXFP8 x MXFP8 -> bf16"),
        GemmFormat("w4a16-nvfp4", BF16, NVFP4, torch.bfloat16, "bf16 activations x NVFP4 weights -> bf16"),
        GemmFormat("w4a16-mxfp4", BF16, MXFP4, torch.bfloat16, "bf16 activations x MXFP4 weights -> bf16"),
    )
})


def gemm_format(name: str) -> GemmFormat:
    """Look up a GEMM format by name; raises KeyError with the known names."""
    try:
        return GEMM_FORMATS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown format {name!r}; known: {', '.join(GEMM_FORMATS)}") from None
