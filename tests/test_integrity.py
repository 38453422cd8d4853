"""Integrity checks (fp4bench.integrity through pipeline.check_case): each planted kernel is caught with
the right reason, an honest kernel is never flagged, and the guarded output looks to a kernel exactly
like the unguarded one. All on the CPU, on fresh random data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fp4bench import integrity
from fp4bench.arch import CPU
from fp4bench.case import CaseStatus
from fp4bench.formats import GEMM_FORMATS, gemm_format
from fp4bench.kernels import get_kernel
from fp4bench.kernels.torch_ref import TorchReference
from fp4bench.pipeline import check_case, check_once
from fp4bench.problem import Shape, generate, poison_output
from fp4bench.reference import expected_output, reference_gemm

PLANTED = Path(__file__).parent / "fixtures" / "kernels"
SHAPE = Shape(64, 96, 256, 1, seed=7)
SEEDS = [7, 49]
NVFP4 = gemm_format("nvfp4")


def planted(name: str):
    return get_kernel(str(PLANTED / f"{name}.py"))


def verify(name: str, shape: Shape = SHAPE, seeds=SEEDS, fmt=NVFP4):
    return check_case(planted(name), shape, fmt, CPU, list(seeds))


@pytest.mark.parametrize("fmt_name", ["nvfp4", "mxfp4"])
def test_honest_kernel_passes_every_check(fmt_name):
    outcome = check_case(TorchReference(), Shape(48, 80, 128, 2, seed=3), gemm_format(fmt_name), CPU, [3, 45])
    assert outcome.status == CaseStatus.PASS, outcome.reason
    assert outcome.findings == []
    assert outcome.run_to_run_diff == 0.0
    assert outcome.check.passed and outcome.check.total == 48 * 80 * 2


@pytest.mark.parametrize("name, check, words", [
    ("cached", integrity.CACHED_OUTPUT, "same output for different inputs"),
    ("input_modifier", integrity.MODIFIES_INPUTS, "changed its input sfa"),
    ("view_returner", integrity.ALIASES_INPUT, "shares memory with input a"),
    ("oob_writer", integrity.OUT_OF_BOUNDS, "8 element(s) after the output"),
])
def test_cheating_kernel_is_flagged(name, check, words):
    outcome = verify(name)
    assert outcome.status == CaseStatus.FAIL
    assert check in outcome.reason and words in outcome.reason, outcome.reason
    assert any(f.startswith(check) for f in outcome.findings)


def test_cache_is_caught_with_a_single_seed():
    # One seed alone cannot reveal a cache; the pipeline draws a probe input for it.
    outcome = verify("cached", seeds=[11])
    assert outcome.status == CaseStatus.FAIL and integrity.CACHED_OUTPUT in outcome.reason


def test_nan_writer_fails_on_the_nan():
    outcome = verify("nan_writer")
    assert outcome.status == CaseStatus.FAIL
    assert "1 of" in outcome.reason and "1 NaN" in outcome.reason


def test_partial_writer_fails_on_unwritten_rows():
    outcome = verify("partial_writer")
    half = (SHAPE.m // 2) * SHAPE.n
    assert outcome.status == CaseStatus.FAIL
    assert f"{half} of {SHAPE.m * SHAPE.n} elements mismatch ({half} NaN" in outcome.reason


def test_nondeterminism_is_reported_without_failing():
    outcome = verify("nondeterministic")
    assert outcome.status == CaseStatus.PASS
    assert outcome.run_to_run_diff > 0
    assert outcome.findings and outcome.findings[0].startswith(integrity.NONDETERMINISTIC)
    assert "differ between two runs" in outcome.reason


def test_raising_kernel_is_an_error_with_its_message():
    outcome = verify("raises")
    assert outcome.status == CaseStatus.ERROR
    assert "ValueError: tile configuration not supported" in outcome.reason


@pytest.mark.parametrize("fmt_name", sorted(GEMM_FORMATS))
def test_guarded_output_looks_like_the_poisoned_output(fmt_name):
    fmt = gemm_format(fmt_name)
    problem = generate(Shape(40, 24, 128, 3, seed=5), fmt)
    plain = poison_output(problem).c
    guarded = integrity.GuardedOutput.for_problem(problem)
    assert guarded.c.shape == plain.shape and guarded.c.stride() == plain.stride()
    assert guarded.c.dtype == plain.dtype and guarded.c.permute(2, 0, 1).is_contiguous()
    assert guarded.c.data_ptr() % 256 == 0
    assert torch.isnan(guarded.c).all()
    # Guards hold NaN too, so a kernel reading a little past c sees poison, never stale numbers.
    assert torch.isnan(guarded.buffer[:guarded.guard]).all() and torch.isnan(guarded.buffer[-guarded.guard:]).all()
    assert guarded.violation() is None
    guarded.c[-1, -1, -1] = 0.0          # inside c: fine
    assert guarded.violation() is None
    guarded.buffer[guarded.guard - 3] = float("nan")   # a different NaN is still a write
    assert "1 element(s) before the output (nearest 3" in guarded.violation()


def test_checked_run_reports_every_finding_and_folds_them_into_the_check():
    problem = generate(SHAPE, NVFP4)
    expected = expected_output(problem)

    def everything_wrong(data):
        TorchReference().prepare(problem)(data)   # correct values in c
        data[1].view(torch.uint8)[0, 0, 0] ^= 0xFF
        flat = data[6].permute(2, 0, 1).reshape(-1)
        torch.as_strided(flat, (flat.numel() + 1,), (1,), flat.storage_offset())[-1] = 1.0
        return data[0]

    run = integrity.checked_run(everything_wrong, problem, expected, lambda: None)
    checks = [f.check for f in run.findings]
    assert checks == [integrity.ALIASES_INPUT, integrity.MODIFIES_INPUTS, integrity.OUT_OF_BOUNDS]
    result = run.to_check_result()
    assert not result.passed and result.reason.startswith(integrity.ALIASES_INPUT)
    # The caller's problem is untouched: the kernel ran on a guarded copy of c, not on problem.c.
    assert not torch.isnan(problem.c).any()


def test_returning_c_itself_or_a_fresh_tensor_is_not_aliasing():
    problem = generate(SHAPE, NVFP4)
    expected = expected_output(problem)
    run = TorchReference().prepare(problem)
    in_place = integrity.checked_run(run, problem, expected, lambda: None)
    fresh = integrity.checked_run(lambda d: run(d).clone(), problem, expected, lambda: None)
    assert in_place.passed and fresh.passed


def test_recheck_after_timing_catches_a_kernel_that_goes_stale():
    honest = TorchReference().prepare(generate(SHAPE, NVFP4))
    calls = {"n": 0}
    stale: dict = {}

    def stale_after_three(data):
        # Right on its first three calls (the checks before timing), then replays its last answer.
        calls["n"] += 1
        if calls["n"] <= 3:
            stale["c"] = honest(data).clone()
            return data[6]
        data[6].copy_(stale["c"])
        return data[6]

    for seed in (1, 2, 3):
        assert check_once(stale_after_three, generate(SHAPE.with_seed(seed), NVFP4), CPU).passed
    fresh = generate(SHAPE.with_seed(1234), NVFP4)
    result = check_once(stale_after_three, fresh, CPU)
    assert not result.passed and "mismatch" in result.reason
    assert check_once(honest, fresh, CPU).passed


def test_run_to_run_difference_measures_bits_and_nan_placement():
    a = torch.randn(8, 8, 1).to(torch.float16)
    assert integrity.run_to_run_difference(a, a.clone()) == (0.0, 0)
    b = a.clone()
    b[1, 2, 0] += 0.5
    worst, n = integrity.run_to_run_difference(a, b)
    assert n == 1 and math.isclose(worst, float((b[1, 2, 0] - a[1, 2, 0]).abs()), rel_tol=1e-3)
    b[3, 3, 0] = float("nan")
    assert integrity.run_to_run_difference(a, b) == (float("inf"), 2)


def test_identical_outputs_are_not_a_cache_when_references_agree():
    # Two inputs with the same product (here: the same data) must not be called a cache.
    problem = generate(SHAPE, NVFP4)
    expected = expected_output(problem)
    ref = expected.values
    first = integrity.checked_run(TorchReference().prepare(problem), problem, expected, lambda: None)
    second = integrity.checked_run(TorchReference().prepare(problem), problem, expected, lambda: None)
    assert integrity.cached_output(first, second, ref, ref.clone()) is None
    other = generate(SHAPE.with_seed(99), NVFP4)
    other_ref = reference_gemm(other)
    assert integrity.cached_output(first, second, ref, other_ref).check == integrity.CACHED_OUTPUT
