"""The output checker: tolerances, dtype and shape, NaN/Inf agreement, mismatch reports."""

from __future__ import annotations

import torch

from fp4bench.checking import Tolerance, check_output


def ref_tensor(shape=(8, 16, 2)):
    return torch.randn(shape, dtype=torch.float32) * 10


def test_exact_output_passes_and_reports_errors():
    ref = ref_tensor()
    r = check_output(ref.to(torch.float16), ref, torch.float16)
    assert r.passed and r.mismatches == 0 and r.max_abs_err == 0.0


def test_wrong_dtype_fails_even_if_values_match():
    ref = ref_tensor()
    r = check_output(ref.clone(), ref, torch.float16)  # fp32 result: the competition's checker let it pass
    assert not r.passed and "dtype" in r.reason


def test_wrong_shape_and_non_tensor_fail():
    ref = ref_tensor()
    assert "shape" in check_output(ref[:4].to(torch.float16), ref, torch.float16).reason
    assert "tensor" in check_output([1, 2], ref, torch.float16).reason


def test_unwritten_nan_is_caught_and_located():
    ref = ref_tensor()
    out = ref.to(torch.float16)
    out[3, 5, 1] = float("nan")
    r = check_output(out, ref, torch.float16)
    assert not r.passed and r.mismatches == 1
    assert r.first_mismatches[0]["index"] == [3, 5, 1]
    assert "NaN" in r.reason


def test_tolerance_edges():
    ref = torch.full((4, 4, 1), 100.0)
    tol = Tolerance.for_dtype(torch.float16)
    inside = ref + (tol.atol + tol.rtol * 100.0) * 0.5
    outside = ref + 0.5  # 0.5 > 1e-3 + 0.1
    assert check_output(inside.to(torch.float16), ref, torch.float16).passed
    r = check_output(outside.to(torch.float16), ref, torch.float16)
    assert not r.passed and r.mismatches == 16


def test_inf_and_nan_must_agree():
    ref = ref_tensor()
    ref[0, 0, 0] = float("inf")
    ref[1, 1, 0] = float("nan")
    good = ref.to(torch.float16)
    assert check_output(good, ref, torch.float16).passed
    flipped = good.clone()
    flipped[0, 0, 0] = float("-inf")
    assert not check_output(flipped, ref, torch.float16).passed
    finite = good.clone()
    finite[1, 1, 0] = 0.0
    assert not check_output(finite, ref, torch.float16).passed


def test_bf16_tolerance_is_one_ulp_wide():
    ref = torch.randn(64, 64, 1) * 1000
    # Rounding to bf16 is within tolerance; shifting by 2% is not.
    assert check_output(ref.to(torch.bfloat16), ref, torch.bfloat16).passed
    assert not check_output((ref * 1.02).to(torch.bfloat16), ref, torch.bfloat16).passed


def test_accumulation_allowance_is_small_on_competition_data_and_still_catches_a_wrong_block(random_seed):
    from fp4bench.formats import gemm_format
    from fp4bench.problem import Shape, generate
    from fp4bench.reference import expected_output

    p = generate(Shape(64, 96, 4096, seed=random_seed), gemm_format("nvfp4"))
    exp = expected_output(p)
    # Far below the relative tolerance on typical elements...
    assert exp.allowance.median() < 1e-3 * exp.values.abs().median()
    # ...and far below the contribution of one 16-element block, so a misplaced scale is still caught.
    ref = exp.values.to(torch.float16)
    bad = ref.clone()
    bad[5, 7, 0] += 16 * 6 * 6 * 3 * 3 / 4  # a quarter of one block's largest possible contribution
    assert check_output(ref, exp.values, torch.float16, allowance=exp.allowance).passed
    assert not check_output(bad, exp.values, torch.float16, allowance=exp.allowance).passed


def test_allowance_covers_reordered_fp32_accumulation_under_cancellation():
    # Large products that cancel: the fp32 sum depends on the order far beyond 1e-2 relative to |c|.
    k = 4096
    a = torch.randn(8, k) * torch.pow(2.0, torch.randint(-8, 9, (8, k)).float())
    b = torch.randn(8, k) * torch.pow(2.0, torch.randint(-8, 9, (8, k)).float())
    forward = (a @ b.T).unsqueeze(-1)
    chunks = sum(a[:, i::7] @ b[:, i::7].T for i in range(7)).unsqueeze(-1)   # another summation order
    magnitude = (a.abs() @ b.abs().T).unsqueeze(-1)
    from fp4bench.reference import ACCUMULATION_SLACK, FP32_UNIT_ROUNDOFF

    allowance = magnitude * ACCUMULATION_SLACK * k ** 0.5 * FP32_UNIT_ROUNDOFF
    assert check_output(chunks.to(torch.bfloat16), forward, torch.bfloat16, allowance=allowance).passed
