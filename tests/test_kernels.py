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

from types import SimpleNamespace

import pytest

import fp4bench.kernels as kernels_module
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
    refused = {}
    for shape in shapes:
        outcome = check_case(kernel, shape, fmt, target, shape.seeds(SEEDS_PER_CASE), kind)
        assert outcome.status in (CaseStatus.PASS, CaseStatus.SKIP), (str(shape), outcome.reason)
        if outcome.status == CaseStatus.PASS:
            assert outcome.check.passed and outcome.check.max_abs_err == outcome.check.max_abs_err  # not NaN
        else:
            refused[str(shape)] = outcome.reason
    # A kernel may refuse some edge shapes (its can_implement says why), never all: that checks nothing.
    assert len(refused) < len(shapes), f"{name} refused every verify shape: {refused}"


def test_the_matrix_covers_every_registered_kernel_kind_and_format(request, monkeypatch):
    # What pytest collects for the matrix test from this module, whatever this session selected.
    matrix_test = test_registered_kernel_is_exact_on_the_verify_shapes.__name__
    collected = [tuple(item.callspec.params[p] for p in ("name", "kind", "fmt_name"))
                 for item in request.node.parent.collect() if getattr(item, "originalname", "") == matrix_test]
    assert len(collected) == len(set(collected)) >= 20
    kernels = all_kernels()
    # Every registered kernel, every kind it declares, and for the GEMM every format it declares, has a case.
    assert {n for n, _, _ in collected} == set(kernels)
    assert {(n, kind) for n, kind, _ in collected} == {(n, kind) for n, k in kernels.items() for kind in k.problems}
    assert {(n, f) for n, kind, f in collected if kind == GEMM} == \
        {(n, f) for n, k in kernels.items() if GEMM in k.problems for f in k.formats}
    # The reference and the dense baselines compute every kind.
    assert {kind for n, kind, _ in collected if n == "torch-ref"} == set(KIND_SPECS)
    # The matrix is read from the registry when collected, so a kernel is checked the moment it is registered.
    registered, errors = kernels_module._load()
    newcomer = SimpleNamespace(name="newcomer", problems=(GEMM,), formats=("nvfp4", "mxfp4"))
    monkeypatch.setattr(kernels_module, "_load", lambda: ({**registered, "newcomer": newcomer}, errors))
    assert {p.values for p in _matrix() if p.values[0] == "newcomer"} == \
        {("newcomer", GEMM, "nvfp4"), ("newcomer", GEMM, "mxfp4")}
