"""Graph mode in the case pipeline (`run --graph`): which kernels are captured, the fallback to eager timing with
its reason in the record, and the input sets rotated instead of an L2 flush.

The timing itself is replaced by a recorder here (no GPU on CI): what is tested is the pipeline's choice of
mode, its fallback and its notes (fp4bench.pipeline._measure), and how many input sets the timed calls get for
each mode (fp4bench.pipeline._audit). The CPU end-to-end test runs the real timer."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from fp4bench import pipeline, timing
from fp4bench.arch import Target
from fp4bench.case import CaseSpec, CaseStatus
from fp4bench.cli import main
from fp4bench.formats import gemm_format
from fp4bench.kernels import all_kernels
from fp4bench.kernels.base import Prepared
from fp4bench.problem import Shape, generate, min_bytes
from fp4bench.reference import expected_output
from fp4bench.timing import MODE_EAGER, MODE_GRAPH, TimingOptions, input_sets_for_cold_l2

H200 = Target("cuda", 0, (9, 0), "NVIDIA H200")
L2_BYTES = 60 << 20
CAPTURE_ERROR = "CUDA error: operation not permitted when stream is capturing"
SHAPE = Shape(128, 256, 512, seed=11)
NOTHING = Prepared(lambda data: None, lambda data: data)


def graph_safe_kernel():
    return all_kernels()["torch-ref"]


def graph_unsafe_kernel():
    # The registry's own declaration: at least one kernel may not be captured (a host sync in its launch path).
    return next(k for _, k in sorted(all_kernels().items()) if not k.graph_safe)


def make_case(kernel, target=H200, mode=MODE_GRAPH, cold_l2=True, shape=SHAPE):
    spec = CaseSpec(kernel.name, "nvfp4", shape, device=target.device, l2_bytes=L2_BYTES,
                    timing=TimingOptions(mode=mode, cold_l2=cold_l2))
    case = pipeline._Case(spec, gemm_format("nvfp4"))
    case.kernel, case.target = kernel, target
    return case


@pytest.fixture
def timer(monkeypatch):
    """Replaces the timer: records each call's mode (and the mode its input sets were made for);
    `timer.fail_graph` makes graph capture raise."""
    calls, syncs = [], []

    def time_kernel(fn, inputs, *, device, options, l2_bytes=0, mode=None):
        calls.append(mode)
        assert inputs.mode == mode   # the input sets were made for this mode
        if mode == MODE_GRAPH and recorder.fail_graph:
            raise RuntimeError(CAPTURE_ERROR + "\n(more of the driver's text)")
        return SimpleNamespace(mode=mode, l2_bytes=l2_bytes)

    recorder = SimpleNamespace(calls=calls, syncs=syncs, fail_graph=False)
    monkeypatch.setattr(timing, "time_kernel", time_kernel)
    monkeypatch.setattr(pipeline, "_audit", lambda case, prepared, base, expected, mode: SimpleNamespace(mode=mode))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: syncs.append(a))
    return recorder


def test_a_graph_safe_kernel_is_captured_without_a_note(timer):
    case = make_case(graph_safe_kernel())
    m = pipeline._measure(case, NOTHING, None, None)
    assert timer.calls == [MODE_GRAPH] and m.mode == MODE_GRAPH and m.l2_bytes == L2_BYTES
    assert case.notes == []


def test_a_kernel_that_does_not_allow_capture_is_timed_eagerly_and_says_so(timer):
    kernel = graph_unsafe_kernel()
    case = make_case(kernel)
    m = pipeline._measure(case, NOTHING, None, None)
    assert timer.calls == [MODE_EAGER] and m.mode == MODE_EAGER          # never captured
    assert case.notes == [f"graph mode not used ({kernel.name} does not allow graph capture); timed eagerly"]
    assert case.record(CaseStatus.PASS).notes == tuple(case.notes)


def test_a_failed_capture_falls_back_to_eager_with_the_reason_recorded(timer):
    timer.fail_graph = True
    case = make_case(graph_safe_kernel())
    m = pipeline._measure(case, NOTHING, None, None)
    assert timer.calls == [MODE_GRAPH, MODE_EAGER] and m.mode == MODE_EAGER
    assert len(timer.syncs) == 1                       # the failed capture's work is drained before eager timing
    (note,) = case.notes
    assert note.startswith("graph capture failed (") and note.endswith("); timed eagerly")
    assert CAPTURE_ERROR in note and "\n" not in note  # the reason, on one line
    assert case.record(CaseStatus.PASS).notes == (note,)


def test_an_eager_failure_is_not_swallowed(monkeypatch):
    def broken(fn, inputs, **kwargs):
        raise RuntimeError("illegal memory access")

    monkeypatch.setattr(timing, "time_kernel", broken)
    monkeypatch.setattr(pipeline, "_audit", lambda case, prepared, base, expected, mode: SimpleNamespace(mode=mode))
    case = make_case(graph_safe_kernel(), mode=MODE_EAGER)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        pipeline._measure(case, NOTHING, None, None)
    assert case.notes == []


def test_graph_mode_on_a_cpu_is_eager_with_a_note(timer):
    case = make_case(graph_safe_kernel(), target=Target("cpu"))
    pipeline._measure(case, NOTHING, None, None)
    assert timer.calls == [MODE_EAGER] and case.notes == ["graph mode not used (on a CPU); timed eagerly"]


def test_graph_mode_rotates_enough_input_sets_to_exceed_l2():
    fmt = gemm_format("nvfp4")
    shape = Shape(128, 1024, 4096, seed=11)
    sets = input_sets_for_cold_l2(min_bytes(shape, fmt), L2_BYTES)
    # One pass over the sets moves more than twice L2, so no replayed call finds its inputs in L2.
    assert 2 < sets < timing.MAX_INPUT_SETS and sets * min_bytes(shape, fmt) > timing.L2_MARGIN * L2_BYTES
    assert math.ceil(timing.L2_MARGIN * L2_BYTES / min_bytes(shape, fmt)) + 1 == sets
    base = generate(shape, fmt)   # the sets' tensors live on the CPU here; the count is what is tested
    expected = expected_output(base)

    def input_sets(**kwargs):
        case = make_case(graph_safe_kernel(), shape=shape, **kwargs)
        return len(pipeline._audit(case, NOTHING, base, expected, case.spec.timing.mode).inputs)

    assert input_sets() == sets
    # Graph mode with a warm L2: two sets (the timed calls' checks need contents that differ); eager: one set
    # per call of a batch, each refilled before every batch (fp4bench.audit).
    assert input_sets(cold_l2=False) == 2
    assert input_sets(mode=MODE_EAGER, target=Target("cpu")) == timing.SAMPLES_PER_BATCH


def test_run_graph_on_the_cpu_records_eager_timing_and_why(tmp_path):
    out = tmp_path / "r.json"
    shapes = tmp_path / "s.yml"
    shapes.write_text("shapes:\n  - {m: 32, n: 64, k: 128}\n")
    r = CliRunner().invoke(main, ["run", "--device", "cpu", "--shapes", str(shapes), "--kernels", "torch-ref",
                                  "--format", "nvfp4", "--graph", "--isolation", "none", "--budget", "0.02",
                                  "--min-samples", "2", "--seeds", "1", "-q", "--no-measure-ceilings",
                                  "--baseline", "none", "--json", str(out)])
    assert r.exit_code == 0, r.output
    (case,) = json.loads(out.read_text())["cases"]
    assert case["status"] == "pass" and case["timing"]["mode"] == MODE_EAGER
    assert case["notes"] == ["graph mode not used (on a CPU); timed eagerly"]
    assert json.loads(out.read_text())["settings"]["timing"]["mode"] == MODE_GRAPH
