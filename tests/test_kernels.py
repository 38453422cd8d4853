"""Every registered kernel x each of its formats x the bundled verify shapes, through the case pipeline's check.

A kernel is tested the moment it is registered: nothing here names one. Where a kernel cannot run on this
machine (a GPU it needs, a toolchain, Triton's interpreter) the case is skipped with the kernel's own reason,
the sentence `fp4bench verify` prints. On a CPU-only machine that leaves the torch kernels; on an H200 the
sm90 kernels and the baselines run too. Fresh random inputs, NaN-poisoned outputs (fp4bench.integrity).
"""

from __future__ import annotations

import pytest

from fp4bench.arch import current_target
from fp4bench.case import CaseStatus
from fp4bench.formats import gemm_format
from fp4bench.kernels import all_kernels
from fp4bench.pipeline import check_case
from fp4bench.problem import generate
from fp4bench.resources import shapes_dir
from fp4bench.shapes import load_shapes

VERIFY_SHAPES = load_shapes(shapes_dir() / "verify.yml")
# The CPU reference of the largest verify shapes takes seconds; one seed per shape keeps the matrix quick.
SEEDS_PER_CASE = 1


def _matrix():
    for name, kernel in sorted(all_kernels().items()):
        for fmt in kernel.formats:
            yield pytest.param(name, fmt, id=f"{name}-{fmt}")


@pytest.fixture(scope="module")
def target():
    return current_target("auto")


@pytest.mark.parametrize("name,fmt_name", list(_matrix()))
def test_registered_kernel_is_exact_on_the_verify_shapes(name, fmt_name, target):
    kernel = all_kernels()[name]
    fmt = gemm_format(fmt_name)
    shapes = [s for s in VERIFY_SHAPES if s.k % fmt.k_multiple == 0]
    reason = kernel.reason_to_skip(generate(shapes[0], fmt, target.torch_device), target)
    if reason:
        pytest.skip(reason)
    for shape in shapes:
        outcome = check_case(kernel, shape, fmt, target, shape.seeds(SEEDS_PER_CASE))
        assert outcome.status in (CaseStatus.PASS, CaseStatus.SKIP), (str(shape), outcome.reason)
        if outcome.status == CaseStatus.PASS:
            assert outcome.check.passed and outcome.check.max_abs_err == outcome.check.max_abs_err  # not NaN


def test_the_matrix_covers_every_registered_kernel_and_format():
    params = {p.values for p in _matrix()}
    expected = {(n, f) for n, k in all_kernels().items() for f in k.formats}
    assert params == expected and len(expected) >= 20
