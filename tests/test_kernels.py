"""Every registered kernel x each of its problem kinds x its formats x the bundled verify shapes, through the
case pipeline's check.

A kernel is tested the moment it is registered: nothing here names one. Where a kernel cannot run on this
machine (a GPU it needs, a toolchain, Triton's interpreter) the case is skipped with the kernel's own reason,
the sentence `fp4bench verify` prints. On a CPU-only machine that leaves the torch kernels; on an H200 the
sm90 kernels and the baselines run too. Shapes: `shapes/verify.yml` for the GEMM, the `smoke` group of each
other problem's bundled set (`shapes/nvfp4_gemv.yml`...). Fresh random inputs, NaN-poisoned outputs
(fp4bench.integrity).
"""

from __future__ import annotations

import pytest

from fp4bench.arch import current_target
from fp4bench.case import CaseStatus
from fp4bench.formats import gemm_format
from fp4bench.kernels import all_kernels
from fp4bench.pipeline import check_case
from fp4bench.problem import GEMM, KIND_SPECS, generate, unsupported_format
from fp4bench.resources import shapes_dir
from fp4bench.shapes import load_shapes


def verify_shapes(kind: str):
    if kind == GEMM:
        return load_shapes(shapes_dir() / "verify.yml")
    return load_shapes(shapes_dir() / f"{KIND_SPECS[kind].competition}.yml", ("smoke",), kind)


# The CPU reference of the largest verify shapes takes seconds; one seed per shape keeps the matrix quick.
SEEDS_PER_CASE = 1


def _matrix():
    for name, kernel in sorted(all_kernels().items()):
        for kind in kernel.problems:
            for fmt in kernel.formats:
                if unsupported_format(kind, gemm_format(fmt)) is None:
                    yield pytest.param(name, kind, fmt, id=f"{name}-{kind}-{fmt}")


@pytest.fixture(scope="module")
def target():
    return current_target("auto")


@pytest.mark.parametrize("name,kind,fmt_name", list(_matrix()))
def test_registered_kernel_is_exact_on_the_verify_shapes(name, kind, fmt_name, target):
    kernel = all_kernels()[name]
    fmt = gemm_format(fmt_name)
    shapes = [s for s in verify_shapes(kind) if all(k % fmt.k_multiple == 0 for _, _, k in s.groups)]
    reason = kernel.reason_to_skip(generate(shapes[0], fmt, target.torch_device, kind), target)
    if reason:
        pytest.skip(reason)
    for shape in shapes:
        outcome = check_case(kernel, shape, fmt, target, shape.seeds(SEEDS_PER_CASE), kind)
        assert outcome.status in (CaseStatus.PASS, CaseStatus.SKIP), (str(shape), outcome.reason)
        if outcome.status == CaseStatus.PASS:
            assert outcome.check.passed and outcome.check.max_abs_err == outcome.check.max_abs_err  # not NaN


def test_the_matrix_covers_every_registered_kernel_kind_and_format():
    params = {p.values for p in _matrix()}
    expected = {(n, kind, f) for n, k in all_kernels().items() for kind in k.problems for f in k.formats
                if unsupported_format(kind, gemm_format(f)) is None}
    assert params == expected and len(expected) >= 20
    # The reference and the dense baselines compute every kind.
    assert {kind for n, kind, _ in params if n == "torch-ref"} == set(KIND_SPECS)
