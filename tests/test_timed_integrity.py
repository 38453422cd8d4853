"""Timing that cannot be cheated (fp4bench.audit, fp4bench.strict, the speed-of-light guard): every planted
cheat fails with its class named, every honest kernel and submission passes, timed, on every problem kind.
CPU tests for every class a CPU can show; the stream, in-flight and L2 classes need a GPU (marked)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fp4bench import audit, integrity, strict
from fp4bench.arch import CPU
from fp4bench.case import CaseSpec, CaseStatus
from fp4bench.cli import main
from fp4bench.formats import GEMM_FORMATS, gemm_format
from fp4bench.kernels import all_kernels, get_kernel
from fp4bench.pipeline import check_case, run_case
from fp4bench.problem import DUAL_GEMM, GEMM, GEMV, GROUP_GEMM, Problem, Shape, generate, min_bytes
from fp4bench.reference import expected_output
from fp4bench.sol import BELOW_PHYSICAL_FLOOR, Ceilings, below_floor, physical_floor
from fp4bench.timing import Rotation, StoppingRule, TimingOptions, measure

FIXTURES = Path(__file__).parent / "fixtures"
PLANTED = FIXTURES / "kernels"
SHAPE = Shape(64, 96, 256, 1, seed=7)
TIMING = TimingOptions(budget_s=0.2, min_samples=5)
NVFP4 = gemm_format("nvfp4")
KIND_SHAPES = {
    GEMM: Shape(40, 24, 128, 2, seed=5),
    GEMV: Shape(40, 1, 128, 2, seed=5),
    DUAL_GEMM: Shape(40, 24, 128, 2, seed=5),
    GROUP_GEMM: Shape((40, 8), (24, 16), (128, 64), 1, seed=5),
}


def timed(kernel: str, shape: Shape = SHAPE, fmt: str = "nvfp4", kind: str = GEMM, **spec):
    return run_case(CaseSpec(kernel, fmt, shape, problem=kind, timing=TIMING, **spec))


def planted(name: str) -> str:
    return str(PLANTED / f"{name}.py")


# ---------------------------------------------------------------------------------------------------------
# the planted cheats, end to end
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, cls, words", [
    ("address_cache", audit.CACHED_BY_ADDRESS, "held before they were refilled"),
    ("timed_shape_cache", audit.CACHED_BY_SHAPE, "another input set"),
    ("call_count", audit.CALL_COUNT_SWITCH, "on buffers it had never seen"),
    ("warmup_detect", audit.WARM_UP_DETECTION, "on buffers it had seen"),
])
def test_a_kernel_right_on_the_checks_and_wrong_when_timed_fails_with_its_class(name, cls, words):
    # Each passes every check before timing (verify says pass): only the checked timed calls catch it.
    assert run_case(CaseSpec(planted(name), "nvfp4", SHAPE)).status == CaseStatus.PASS
    record = timed(planted(name))
    assert record.status == CaseStatus.FAIL, record.reason
    assert record.reason.startswith(f"{cls}: ") and words in record.reason, record.reason
    assert record.timing is None and record.findings and record.findings[0].startswith(cls)


@pytest.mark.parametrize("name, cls, words", [
    ("nan_reference", integrity.TAMPERED_REFERENCE, "written into"),
    ("copies_reference", integrity.CACHED_OUTPUT, "same output for different inputs"),
    ("reference_import", strict.REFERENCE_CALL, "imports the reference (fp4bench.reference)"),
    ("reference_at_call", strict.REFERENCE_CALL, "calls the reference (fp4bench.reference.reference_gemm"),
    ("dense_mm", strict.VENDOR_GEMM, "dense torch matmuls (torch.matmul x1) do 100%"),
    ("chunked_mm", strict.VENDOR_GEMM, "dense torch matmuls (torch.matmul x4) do 100%"),
    ("scaled_mm", strict.VENDOR_GEMM, "calls torch._scaled_mm"),
])
def test_reference_tampering_and_vendor_calls_fail_the_checks_with_their_class(name, cls, words):
    outcome = check_case(get_kernel(planted(name)), SHAPE, NVFP4, CPU, [7, 49], strict=True)
    assert outcome.status == CaseStatus.FAIL, outcome.reason
    assert cls in outcome.reason and words in outcome.reason, outcome.reason


@pytest.mark.parametrize("name", ["dense_mm", "chunked_mm", "scaled_mm", "reference_import", "reference_at_call"])
def test_strictness_is_what_fails_the_vendor_and_reference_submissions(name):
    # Their values are right: without --strict-submission they pass (and registered kernels are never traced).
    outcome = check_case(get_kernel(planted(name)), SHAPE, NVFP4, CPU, [7, 49], strict=False)
    assert outcome.status == CaseStatus.PASS, outcome.reason


def test_a_registered_kernel_is_not_traced():
    # cublas-dense is the vendor's dense GEMM by design; strictness applies to submission files only.
    outcome = check_case(get_kernel("cublas-dense"), SHAPE, NVFP4, CPU, [7, 49], strict=True)
    assert outcome.status == CaseStatus.PASS, outcome.reason


def test_a_submission_gets_no_preparation_step_of_its_own():
    kernel = get_kernel(planted("prepare_hook"))
    problem = generate(SHAPE, NVFP4)
    assert kernel.prepare_inputs(problem, problem.data) is problem.data
    outcome = check_case(kernel, SHAPE, NVFP4, CPU, [7, 49], strict=True)
    # Its own prepare_inputs never ran: the timed function found nothing prepared and left c unwritten.
    assert outcome.status == CaseStatus.FAIL and "NaN: unwritten" in outcome.reason, outcome.reason


@pytest.mark.parametrize("name", ["correct", "fresh_output", "nondeterministic"])
def test_honest_submissions_pass_timed(name):
    record = timed(planted(name))
    assert record.status == CaseStatus.PASS, record.reason
    assert record.timing["stats"]["n"] >= 5 and record.timing["input_sets"] == audit.SAMPLES_PER_BATCH


@pytest.mark.parametrize("kind, fixture", [(GEMM, "kernels/correct.py"), (GEMV, "problems/gemv_correct.py"),
                                           (DUAL_GEMM, "problems/dual_gemm_correct.py"),
                                           (GROUP_GEMM, "problems/group_gemm_correct.py")])
def test_honest_submissions_of_every_problem_kind_pass_timed(kind, fixture):
    record = timed(str(FIXTURES / fixture), KIND_SHAPES[kind], kind=kind)
    assert record.status == CaseStatus.PASS, record.reason


def _cpu_kernels() -> list[tuple[str, str]]:
    return [(k.name, f) for k in all_kernels().values() if k.unavailable_reason(CPU) is None
            and GEMM in k.problems for f in k.formats]


@pytest.mark.parametrize("name, fmt", _cpu_kernels())
def test_every_shipped_kernel_that_runs_on_a_cpu_passes_timed(name, fmt):
    record = timed(name, Shape(48, 40, 128, 2, seed=3), fmt)
    assert record.status == CaseStatus.PASS, record.reason


@pytest.mark.parametrize("kind", [GEMV, DUAL_GEMM, GROUP_GEMM])
def test_the_dense_baseline_passes_timed_on_every_problem_kind(kind):
    record = timed("cublas-dense", KIND_SHAPES[kind], kind=kind)
    assert record.status == CaseStatus.PASS, record.reason


def test_run_names_each_cheat_in_its_output_within_100_columns(tmp_path):
    shapes = tmp_path / "shapes.yml"
    shapes.write_text("- {m: 64, n: 96, k: 256}\n")
    kernels = ",".join(planted(n) for n in ("address_cache", "warmup_detect", "dense_mm", "correct"))
    r = CliRunner().invoke(main, ["run", "--shapes", str(shapes), "--kernels", kernels, "--format", "nvfp4",
                                  "--device", "cpu", "--isolation", "none", "--budget", "0.1", "-q"])
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    for words in ("address_cache nvfp4 64x96x256 FAIL: cached-by-address",
                  "warmup_detect nvfp4 64x96x256 FAIL: warm-up-detection",
                  "dense_mm nvfp4 64x96x256 FAIL: vendor-gemm", "1 passed, 3 failed"):
        assert words in text, r.output
    assert max(map(len, r.output.splitlines())) <= 100


# ---------------------------------------------------------------------------------------------------------
# the timed calls' input sets
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, fmt_name", [(GEMM, f) for f in sorted(GEMM_FORMATS)] +
                         [(kind, "nvfp4") for kind in (GEMV, DUAL_GEMM, GROUP_GEMM)])   # those exist in nvfp4
def test_a_variant_is_the_base_with_rows_negated_and_its_reference_follows_exactly(kind, fmt_name):
    fmt = gemm_format(fmt_name)
    base = generate(KIND_SHAPES[kind], fmt, "cpu", kind)
    contents = audit.Contents(base, seed=11)
    variant = contents.draw()
    data = audit.clone_tree(base.data)
    contents.write(variant, data)
    direct = expected_output(Problem(base.shape, fmt, data, base.device, kind))
    derived = contents.expected(variant, expected_output(base))
    def as_list(v):
        return v if isinstance(v, list) else [v]

    assert all(torch.equal(a, b) for a, b in zip(as_list(direct.values), as_list(derived.values)))
    assert any(bool(n.any()) and not bool(n.all()) for n in variant.negated)   # some rows flipped, not all
    # The pre-filled c is negated with the output, so an unwritten output is told from a stale one.
    for before, c in zip(contents.prefill(variant), base.spec.outputs(data)):
        assert torch.equal(before.view(torch.int16), c.view(torch.int16))
    # Everything but the flipped operands and c is the base's, bit for bit.
    flipped = {name for _, name, *_ in contents.flips}
    for (name, t), (_, b) in zip(base.spec.inputs(data), base.spec.inputs(base.data)):
        same = torch.equal(t.view(torch.uint8) if t.element_size() == 1 else t, b.view(torch.uint8)
                           if b.element_size() == 1 else b)
        assert same == (name not in flipped), name


class _Spy:
    """A timed callable that records which buffers and which bytes every call saw."""

    def __init__(self, problem: Problem):
        self.honest = get_kernel("torch-ref").prepare(problem)
        self.calls: list[tuple[int, bytes]] = []

    def __call__(self, data):
        self.calls.append((data[0].data_ptr(), bytes(data[0].contiguous().view(torch.uint8).flatten().tolist())))
        return self.honest(data)


def test_timed_calls_see_refilled_and_fresh_buffers_and_never_the_same_bytes_twice():
    base = generate(SHAPE, NVFP4)
    spy = _Spy(base)
    rotation = audit.TimedAudit(base, expected_output(base), spy, lambda data: data, slots=4)
    m = measure(spy, rotation, device=torch.device("cpu"), rule=StoppingRule(budget_s=60, min_samples=12,
                                                                              max_samples=12))
    warm = m.warmup_calls   # every slot at least once before the batches
    calls = spy.calls[warm:]
    assert len(calls) == 3 * (1 + 4)   # three batches: the probe on fresh buffers, then one timed call per slot
    contents = [c for _, c in calls]
    assert len(set(contents)) == len(contents)                 # no two calls saw the same bytes
    pointers = [p for p, _ in calls]
    timed_pointers = [p for i, p in enumerate(pointers) if i % 5]
    assert len(set(timed_pointers)) < len(timed_pointers)      # the same buffers, refilled
    probes = pointers[0::5]
    assert not set(probes) & {p for p, _ in spy.calls[:warm]} and len(set(probes)) == 3   # and fresh ones


def test_the_hooks_run_outside_the_timed_region():
    events: list[str] = []

    class Recorder(Rotation):
        batch_calls = 3

        def begin_batch(self, calls):
            events.append("begin")
            return super().begin_batch(calls)

        def before_call(self, j):
            events.append(f"before {j}")

        def after_call(self, j, out):
            events.append(f"after {j} {out}")

        def end_batch(self):
            events.append("end")

    def fn(data):
        events.append(f"call {data}")
        return data * 10

    measure(fn, Recorder([1, 2]), device=torch.device("cpu"), rule=StoppingRule(budget_s=60, min_samples=3,
                                                                                max_samples=3))
    first = events.index("begin")
    assert events[first:] == ["begin", "before 0", "call 1", "after 0 10", "before 1", "call 2", "after 1 20",
                              "before 2", "call 1", "after 2 10", "end"]


def test_the_honest_callable_sees_the_product_of_its_preparation_after_every_refill():
    base = generate(SHAPE, NVFP4)
    prepared = get_kernel("cublas-dense").prepared(base)
    seen = []

    def run(product):
        seen.append(product)
        return prepared.run(product)

    rotation = audit.TimedAudit(base, expected_output(base), run, prepared.inputs, slots=3)
    products = list(rotation.inputs)
    measure(run, rotation, device=torch.device("cpu"), rule=StoppingRule(budget_s=60, min_samples=6, max_samples=6))
    timed_products = [p for p in seen if not any(p is q for q in products)]
    assert timed_products and all(isinstance(p, tuple) and len(p) == 2 for p in timed_products)


# ---------------------------------------------------------------------------------------------------------
# the pieces
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tamper", [lambda e: e.values.__setitem__((3, 4, 0), float("nan")),
                                    lambda e: e.values.__setitem__((0, 0, 0), e.values[0, 0, 0] + 1),
                                    lambda e: e.allowance.fill_(float("inf"))])   # would pass anything
def test_a_seal_breaks_when_the_reference_is_written_into(tamper):
    expected = expected_output(generate(SHAPE, NVFP4))
    seal = integrity.Seal.of(expected)
    assert seal.broken() is None
    tamper(expected)
    assert seal.broken().check == integrity.TAMPERED_REFERENCE


def test_an_output_written_after_the_call_returned_is_in_flight():
    # A CPU stand-in for work on a stream nobody waits for: a thread fills c after the call returned, and the
    # "device synchronize" joins it.
    problem = generate(SHAPE, NVFP4)
    honest = get_kernel("torch-ref").prepare(problem)
    workers = []

    def late(data):
        worker = threading.Thread(target=lambda: (time.sleep(0.05), honest(data)))
        worker.start()
        workers.append(worker)
        return data[6]

    run = integrity.checked_run(late, problem, expected_output(problem), lambda: [w.join() for w in workers])
    assert run.check.passed   # the values are right once everything finished
    assert run.fatal.check == integrity.OUTPUT_IN_FLIGHT and "changed after the call returned" in run.reason()


def test_the_speed_of_light_guard_fails_a_median_under_half_the_floor():
    ceilings = Ceilings(copy_bytes_per_s=4e12, matrix_flops_per_s={"bf16": 8e14, "fp8": 1.6e15})
    shape = Shape(128, 7168, 16384)
    floor = physical_floor(shape, NVFP4, None, ceilings)   # no declared path: the fastest measured one
    assert floor.seconds == pytest.approx(max(shape.flops / 1.6e15, min_bytes(shape, NVFP4) / 4e12))
    assert below_floor(floor.seconds * 0.6, floor) is None
    reason = below_floor(0.65e-6, floor)
    assert reason == (f"{BELOW_PHYSICAL_FLOOR}: median 0.65 us is 0.035x the physical floor 18.8 us "
                      f"(30.1 GFLOP at the fp8 rate 1600 TFLOP/s)")
    # A declared path takes its own rate; a warm L2 drops the bytes bound.
    assert physical_floor(shape, NVFP4, "bf16", ceilings).seconds == pytest.approx(shape.flops / 8e14)
    small = Shape(128, 128, 128)
    assert "TFLOP/s" in physical_floor(small, NVFP4, "bf16", ceilings, cold_l2=False).why
    assert physical_floor(shape, NVFP4, None, None) is None


def test_a_case_timed_below_its_floor_fails_with_the_ratio():
    # On the CPU with ceilings that say the case cannot take under a second: an honest kernel "beats" them.
    ceilings = Ceilings(copy_bytes_per_s=1e3, matrix_flops_per_s={"bf16": 1e3}).to_dict()
    record = timed("torch-ref", ceilings=ceilings)
    assert record.status == CaseStatus.FAIL and record.reason.startswith(BELOW_PHYSICAL_FLOOR), record.reason
    assert "x the physical floor" in record.reason and record.timing is None


def test_matmul_work_is_counted_for_every_matmul_form():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    trace_call, trace = strict.traced(lambda d: (a @ b, torch.einsum("ik,kj->ij", a, b),
                                                 torch.nn.functional.linear(a, b.T), torch.bmm(a[None], b[None]),
                                                 torch.nn.functional.conv1d(a.T[None], b.T[:, :, None])))
    trace_call(None)
    assert trace.matmul_work == 5 * 2 * 8 * 4 * 16
    assert strict.trace_findings(trace, 2 * 8 * 4 * 16 * 11) == []          # under half the problem's work
    assert strict.trace_findings(trace, 2 * 8 * 4 * 16 * 5)[0].check == strict.VENDOR_GEMM


def test_the_import_check_follows_a_submission_s_own_helper_modules(tmp_path):
    (tmp_path / "helper_of_a_submission.py").write_text("from fp4bench.reference import reference_gemm\n")
    sub = tmp_path / "sub.py"
    sub.write_text("import helper_of_a_submission as helper\n\n\ndef custom_kernel(data):\n"
                   "    return helper.reference_gemm(data)\n")
    kernel = get_kernel(str(sub))
    assert "fp4bench.reference" in kernel.imports   # recorded while the helper loaded
    # A second submission importing the cached helper records nothing new: the globals still tell.
    found = strict.import_findings((), kernel.namespace, kernel.folder)
    assert found and found[0].check == strict.REFERENCE_CALL and "fp4bench.reference" in str(found[0])


# ---------------------------------------------------------------------------------------------------------
# GPU: streams, in-flight outputs, the persisting L2
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_gpu_work_on_a_private_stream_is_an_output_in_flight():
    from fp4bench.arch import current_target

    outcome = check_case(get_kernel(planted("private_stream")), SHAPE, NVFP4, current_target("cuda"), [7, 49])
    assert outcome.status == CaseStatus.FAIL and integrity.OUTPUT_IN_FLIGHT in outcome.reason, outcome.reason


@pytest.mark.gpu
def test_gpu_work_the_events_do_not_see_fails_the_cross_check():
    record = timed(planted("side_stream_work"), device="cuda")
    assert record.status == CaseStatus.FAIL and record.reason.startswith(audit.WORK_OUTSIDE_EVENTS), record.reason


@pytest.mark.gpu
def test_gpu_a_persisting_l2_carve_out_is_flagged_and_reset():
    from cuda.bindings import runtime

    from fp4bench.arch import current_target

    outcome = check_case(get_kernel(planted("l2_persist")), SHAPE, NVFP4, current_target("cuda"), [7, 49])
    assert outcome.status == CaseStatus.FAIL and audit.L2_PERSISTING in outcome.reason, outcome.reason
    assert runtime.cudaDeviceGetLimit(runtime.cudaLimit.cudaLimitPersistingL2CacheSize)[1] == 0
    record = timed(planted("l2_persist"), device="cuda")
    assert record.status == CaseStatus.FAIL and audit.L2_PERSISTING in record.reason, record.reason


@pytest.mark.gpu
@pytest.mark.parametrize("name, cls", [("address_cache", audit.CACHED_BY_ADDRESS),
                                       ("timed_shape_cache", audit.CACHED_BY_SHAPE),
                                       ("call_count", audit.CALL_COUNT_SWITCH),
                                       ("warmup_detect", audit.WARM_UP_DETECTION)])
def test_gpu_timed_cheats_fail_with_their_class(name, cls):
    record = timed(planted(name), device="cuda")
    assert record.status == CaseStatus.FAIL and record.reason.startswith(cls), record.reason


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["eager", "graph"])
@pytest.mark.parametrize("name", ["cublas-dense", "torch-dequant-mm", "torch-ref"])
def test_gpu_honest_kernels_pass_the_timed_checks(name, mode):
    record = run_case(CaseSpec(name, "nvfp4", Shape(256, 512, 1024, 2, seed=3), device="cuda",
                               timing=TimingOptions(budget_s=0.3, mode=mode)))
    assert record.status == CaseStatus.PASS, record.reason


@pytest.mark.gpu
def test_gpu_the_nvbench_timer_s_cases_are_checked_too():
    pytest.importorskip("cuda.bench")
    record = run_case(CaseSpec(planted("address_cache"), "nvfp4", SHAPE, device="cuda",
                               timing=TimingOptions(budget_s=0.3, timer="nvbench")))
    assert record.status == CaseStatus.FAIL and record.reason.startswith(audit.CACHED_BY_ADDRESS), record.reason
