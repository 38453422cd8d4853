"""Speed-of-light arithmetic: FLOPs and bytes of a problem, which rate bounds which math path."""

from __future__ import annotations

import pytest

from fp4bench.formats import gemm_format
from fp4bench.kernels.base import Kernel
from fp4bench.problem import Shape, min_bytes
from fp4bench.sol import Ceilings, achieved, estimate, math_path_of

CEILINGS = Ceilings(copy_bytes_per_s=4e12, matrix_flops_per_s={"bf16": 800e12, "fp8": 1600e12})


def nvfp4_bytes_by_hand(m, n, k):
    # e2m1 packs two values per byte; one e4m3 scale byte per 16 values; fp16 output
    return m * k // 2 + m * k // 16 + n * k // 2 + n * k // 16 + 2 * m * n


def test_problem_bytes_match_a_hand_count():
    assert min_bytes(Shape(128, 7168, 16384), gemm_format("nvfp4")) == nvfp4_bytes_by_hand(128, 7168, 16384)
    # MXFP4: one e8m0 byte per 32 values, bf16 output; L multiplies everything
    m, n, k, l = 64, 128, 512, 3
    expected = l * (m * k // 2 + m * k // 32 + n * k // 2 + n * k // 32 + 2 * m * n)
    assert min_bytes(Shape(m, n, k, l), gemm_format("mxfp4")) == expected


def test_memory_bound_small_m():
    shape = Shape(16, 7168, 16384)   # 3.8 GFLOP (2.3 us at 1600 TFLOP/s) against 62 MB (15.5 us at 4 TB/s)
    est = estimate(shape, gemm_format("nvfp4"), "fp8", CEILINGS)
    assert est.flops == 2 * 16 * 7168 * 16384
    assert est.compute_s == pytest.approx(est.flops / 1600e12)
    assert est.memory_s == pytest.approx(nvfp4_bytes_by_hand(16, 7168, 16384) / 4e12)
    assert est.bound == "memory" and est.seconds == est.memory_s


def test_compute_bound_large_square():
    est = estimate(Shape(8192, 8192, 8192), gemm_format("mxfp4"), "bf16", CEILINGS)
    assert est.bound == "compute"
    assert est.seconds == pytest.approx(2 * 8192 ** 3 / 800e12)


def test_fp16_path_uses_the_bf16_rate_and_unknown_rates_give_no_sol():
    shape = Shape(4096, 4096, 4096)
    fmt = gemm_format("nvfp4")
    assert estimate(shape, fmt, "fp16", CEILINGS).compute_s == estimate(shape, fmt, "bf16", CEILINGS).compute_s
    no_fp4 = estimate(shape, fmt, "fp4", CEILINGS)
    assert no_fp4.compute_s is None and no_fp4.seconds is None and no_fp4.bound is None
    assert estimate(shape, fmt, "fp16", None).seconds is None


def test_math_path_defaults_to_the_exact_dense_dtype():
    class Plain(Kernel):
        name, formats = "plain", ("nvfp4",)

        def prepare(self, problem):
            raise NotImplementedError

    class Fp8(Plain):
        math_path = "fp8"

    class Bogus(Plain):
        math_path = "int3"

    assert math_path_of(Plain(), gemm_format("nvfp4")) == "fp16"
    assert math_path_of(Plain(), gemm_format("mxfp4")) == "bf16"
    assert math_path_of(Plain(), gemm_format("w4a16-nvfp4")) == "bf16"   # bf16 activations
    assert math_path_of(Fp8(), gemm_format("nvfp4")) == "fp8"
    with pytest.raises(ValueError):
        math_path_of(Bogus(), gemm_format("nvfp4"))


def test_achieved_metrics():
    m = achieved(flops=2e12, nbytes=4e9, seconds=1e-3, sol_s=5e-4)
    assert m["tflops"] == pytest.approx(2000.0)
    assert m["gbps"] == pytest.approx(4000.0)
    assert m["pct_sol"] == pytest.approx(50.0)
    assert achieved(1, 1, 1.0, None)["pct_sol"] is None
    with pytest.raises(ValueError):
        achieved(1, 1, 0.0, None)


def test_ceilings_round_trip():
    assert Ceilings.from_dict(CEILINGS.to_dict()) == CEILINGS
