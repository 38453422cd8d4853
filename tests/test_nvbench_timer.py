"""The nvbench timing back-end: option mapping, nvbench's output -> Measurement, the errors, the once-per-process
runner (against a stand-in for cuda.bench) and, on a GPU with cuda-bench installed, agreement with our own timer."""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import struct
import sys
import types

import pytest
import torch

from fp4bench import nvbench_timer, timing
from fp4bench.nvbench_timer import (NvbenchSettings, measure_nvbench, measurement_from_json, read_samples_file,
                                    settings_for, stdrel_stop_reason, summary_runs)
from fp4bench.timing import StoppingRule

CUDA0 = torch.device("cuda", 0)


# ---------------------------------------------------------------------------------------------
# the stopping rule in nvbench's terms
# ---------------------------------------------------------------------------------------------
def test_default_rule_maps_onto_stdrel():
    s = settings_for(StoppingRule())
    assert s.criterion == "stdrel"
    assert s.max_noise == pytest.approx(0.005 * math.sqrt(10))   # target RSE x sqrt(min_samples)
    assert (s.min_time, s.min_samples, s.timeout_s) == (0.0, 10, 2.0)
    args = s.cli_args()
    # nvbench's command line takes max-noise in percent
    assert args[args.index("--max-noise") + 1] == repr(s.max_noise * 100)
    assert args[args.index("--timeout") + 1] == "2.0" and args[args.index("--min-samples") + 1] == "10"


def test_stopping_on_max_noise_meets_our_rse_target():
    rule = StoppingRule(target_rse=0.002, budget_s=5.0, min_samples=25)
    s = settings_for(rule)
    # samples whose relative std is just under max-noise, at the smallest n nvbench may stop at
    spread = 0.999 * s.max_noise
    samples = [1.0 + spread * (1 if i % 2 else -1) * math.sqrt((rule.min_samples - 1) / rule.min_samples)
               for i in range(rule.min_samples)]
    assert statistics.stdev(samples) / statistics.fmean(samples) < s.max_noise
    assert timing.relative_standard_error(samples) < rule.target_rse


def test_runner_argv_and_benchmark_configuration():
    argv = nvbench_timer.runner_argv(3, "/tmp/x/nvbench.json")
    assert argv[argv.index("--devices") + 1] == "3"
    assert argv[argv.index("--jsonbin") + 1] == "/tmp/x/nvbench.json"
    assert argv[argv.index("--benchmark") + 1] == nvbench_timer.BENCHMARK_NAME and "--quiet" in argv
    calls = []
    bench = types.SimpleNamespace(**{name: (lambda *a, name=name: calls.append((name, *a)))
                                     for name in ("set_stopping_criterion", "set_criterion_param_float64",
                                                  "set_min_samples", "set_timeout")})
    s = NvbenchSettings(max_noise=0.02, min_time=0.0, min_samples=7, timeout_s=1.5)
    nvbench_timer.configure_benchmark(bench, s)
    assert calls == [("set_stopping_criterion", "stdrel"), ("set_criterion_param_float64", "max-noise", 0.02),
                     ("set_criterion_param_float64", "min-time", 0.0), ("set_min_samples", 7),
                     ("set_timeout", 1.5)]


# ---------------------------------------------------------------------------------------------
# why nvbench stopped
# ---------------------------------------------------------------------------------------------
SETTINGS = NvbenchSettings(max_noise=0.0158, min_time=0.0, min_samples=10, timeout_s=2.0)


def test_quiet_samples_converge():
    samples = [1e-3 * (1 + 0.001 * (i % 3)) for i in range(10)]
    assert stdrel_stop_reason(samples, SETTINGS) == "converged"


def test_too_few_or_noisy_samples_mean_the_timeout_ended_it():
    assert stdrel_stop_reason([1e-3] * 9, SETTINGS) == "budget"            # under min_samples
    noisy = [1e-3 if i % 2 else 1.2e-3 for i in range(40)]                # std/mean ~ 9.4% > max-noise
    assert stdrel_stop_reason(noisy, SETTINGS) == "budget"


def test_noise_that_settles_above_max_noise_is_noise_stable():
    noisy = [1e-3 if i % 2 else 1.2e-3 for i in range(128)]
    # nvbench checks stability only every 16 samples, with more than 64 noise estimates
    assert stdrel_stop_reason(noisy, SETTINGS) == "noise-stable"
    assert stdrel_stop_reason(noisy[:127], SETTINGS) == "budget"


def test_unusable_noise_estimates():
    assert stdrel_stop_reason([0.0] * 80, SETTINGS) == "invalid-noise"


# ---------------------------------------------------------------------------------------------
# nvbench's output -> Measurement
# ---------------------------------------------------------------------------------------------
def _summary(tag, value=None, kind="float64", **data):
    s = {"tag": tag, "name": tag, "description": tag, "hint": "duration", "hide": "Hidden by default."}
    fields = [] if value is None else [{"name": "value", "type": kind, "value": str(value)}]
    fields += [{"name": k, "type": "string" if isinstance(v, str) else "int64", "value": str(v)}
               for k, v in data.items()]
    if fields:
        s["data"] = fields
    return s


def _cold_run(n, mean, median, std, lo, hi, walltime, sidecar=None):
    """The summaries one cold measurement adds to a state, as nvbench 0.3.0 writes them (values as strings)."""
    out = [_summary("nv/cold/sample_size", n, "int64"), _summary("nv/cold/walltime", walltime),
           _summary("nv/cold/time/cpu/mean", mean * 1.1), _summary("nv/cold/time/cpu/stdev/relative", 0.02),
           _summary("nv/cold/time/gpu/min", lo), _summary("nv/cold/time/gpu/max", hi),
           _summary("nv/cold/time/gpu/mean", mean), _summary("nv/cold/time/gpu/stdev/absolute", std),
           _summary("nv/cold/time/gpu/stdev/relative", std / mean),
           _summary("nv/cold/time/gpu/q1", median * 0.99), _summary("nv/cold/time/gpu/median", median),
           _summary("nv/cold/time/gpu/q3", median * 1.01)]
    if sidecar is not None:
        out.append(_summary("nv/json/bin:nv/cold/sample_times", filename=sidecar[0], size=sidecar[1]))
    return out


def _document(summaries):
    return {"meta": {"argv": ["fp4bench-nvbench", "--quiet", "--jsonbin", "nvbench.json"],
                     "version": {"json": {"major": 1, "minor": 0, "patch": 0, "string": "1.0.0"}}},
            "devices": [{"id": 0, "name": "NVIDIA H200", "l2_cache_size": 62914560}],
            "benchmarks": [{"name": "fp4bench_case", "index": 0, "min_samples": 10, "timeout": 2.0,
                            "devices": [0], "axes": None,
                            "states": [{"name": "Device=0", "min_samples": 10, "timeout": 2.0, "device": 0,
                                        "type_config_index": 0, "axis_values": None, "summaries": summaries,
                                        "is_skipped": False}]}]}


def test_samples_file_round_trip(tmp_path):
    path = tmp_path / "0.bin"
    path.write_bytes(struct.pack("<3f", 1e-3, 2e-3, 3e-3))
    assert read_samples_file(str(path)) == pytest.approx([1e-3, 2e-3, 3e-3], rel=1e-6)
    (tmp_path / "bad.bin").write_bytes(b"abc")
    with pytest.raises(ValueError):
        read_samples_file(str(tmp_path / "bad.bin"))


def test_json_document_with_sample_file(tmp_path):
    samples = [1.0e-3, 1.001e-3, 0.999e-3, 1.002e-3, 1.0e-3, 0.998e-3, 1.001e-3, 1.0e-3, 1.0e-3, 1.003e-3]
    (tmp_path / "nvbench.json-bin").mkdir()
    (tmp_path / "nvbench.json-bin" / "0.bin").write_bytes(struct.pack(f"<{len(samples)}f", *samples))
    doc = _document(_cold_run(10, 1.0003e-3, 1.0e-3, 1.4e-6, 0.998e-3, 1.003e-3, 0.05,
                              sidecar=("nvbench.json-bin/0.bin", 10)))
    doc = json.loads(json.dumps(doc))
    m = measurement_from_json(doc, SETTINGS, json_dir=str(tmp_path), input_sets=2)
    assert m.samples == pytest.approx(samples, rel=1e-6)
    assert m.stats == timing.Stats.from_samples(m.samples)
    assert (m.timer, m.clock, m.stop_reason, m.input_sets, m.calls_per_sample) == \
        ("nvbench", "nvbench-cuda-events", "converged", 2, 1)
    assert m.seconds == pytest.approx(0.05)


def test_json_document_summaries_only():
    # two cold measurements in one state (our runner's state serves every case): pick each by index
    doc = _document(_cold_run(10, 2.0e-3, 1.99e-3, 1e-5, 1.98e-3, 2.03e-3, 0.1,
                              sidecar=("nvbench.json-bin/0.bin", 10))
                    + _cold_run(400, 5.0e-3, 4.9e-3, 5e-4, 4.0e-3, 7.0e-3, 2.3))
    doc = json.loads(json.dumps(doc))
    assert len(summary_runs(doc["benchmarks"][0]["states"][0])) == 2
    first = measurement_from_json(doc, SETTINGS, benchmark="fp4bench_case", run=0)   # its sidecar is gone
    assert (first.stats.n, first.stats.median, first.stats.mean, first.stats.min, first.stats.max) == \
        (10, 1.99e-3, 2.0e-3, 1.98e-3, 2.03e-3)
    assert first.samples == [] and first.stop_reason == "converged"
    assert first.stats.rse == pytest.approx(1e-5 / math.sqrt(10) / 2.0e-3)
    assert math.isnan(first.stats.p10) and math.isnan(first.stats.p90)   # nvbench reports no such percentiles
    last = measurement_from_json(doc, SETTINGS)
    assert last.stats.n == 400 and last.stats.std == 5e-4
    assert last.stop_reason == "budget" and last.seconds == pytest.approx(2.3)   # noise 10% > max-noise, timed out


# One cold measurement as nvbench 0.3.0 wrote it on an H200 (a 256^3 bf16 torch.mm; its state in the run's
# --jsonbin document, trimmed to the summaries used here, descriptions dropped). The sidecar was consumed.
REAL_H200_STATE = """{"name":"Device=0","min_samples":10,"cold_warmup_runs":1,"cold_max_warmup_walltime":-1.0,
"batch_target_time":0.5,"skip_time":-1.0,"timeout":2.0,"device":0,"type_config_index":0,"axis_values":null,
"is_skipped":false,"summaries":[
{"tag":"nv/cold/sample_size","name":"Samples","hint":"sample_size","data":[{"name":"value","type":"int64","value":"80"}]},
{"tag":"nv/cold/walltime","name":"Walltime","hint":"duration","hide":"Hidden by default.","data":[{"name":"value","type":"float64","value":"0.007371094000000001"}]},
{"tag":"nv/cold/time/gpu/min","name":"Min GPU Time","hint":"duration","hide":"Hidden by default.","data":[{"name":"value","type":"float64","value":"5.055999848991632e-06"}]},
{"tag":"nv/cold/time/gpu/max","name":"Max GPU Time","hint":"duration","hide":"Hidden by default.","data":[{"name":"value","type":"float64","value":"6.335999816656113e-06"}]},
{"tag":"nv/cold/time/gpu/mean","name":"GPU Time","hint":"duration","data":[{"name":"value","type":"float64","value":"5.488400009926404e-06"}]},
{"tag":"nv/cold/time/gpu/stdev/absolute","name":"Noise","hint":"duration","hide":"Hidden by default.","data":[{"name":"value","type":"float64","value":"4.0919832619914645e-07"}]},
{"tag":"nv/cold/time/gpu/stdev/relative","name":"Noise","hint":"percentage","data":[{"name":"value","type":"float64","value":"0.0745569429085096"}]},
{"tag":"nv/cold/time/gpu/median","name":"Median GPU Time","hint":"duration","hide":"Hidden by default.","data":[{"name":"value","type":"float64","value":"5.4080002009868624e-06"}]},
{"tag":"nv/json/bin:nv/cold/sample_times","name":"Sample Times File","hint":"file/sample_times","hide":"Not needed in table.","data":[{"name":"filename","type":"string","value":"nvbench.json-bin/0.bin"},{"name":"size","type":"int64","value":"80"}]}
]}"""


def test_real_nvbench_document(tmp_path):
    doc = _document([])
    doc["benchmarks"][0]["states"] = [json.loads(REAL_H200_STATE)]
    m = measurement_from_json(doc, settings_for(StoppingRule()), json_dir=str(tmp_path))
    assert (m.stats.n, m.samples) == (80, [])
    assert m.stats.median == pytest.approx(5.408e-6) and m.stats.mean == pytest.approx(5.4884e-6)
    assert (m.stats.min, m.stats.max) == (pytest.approx(5.056e-6), pytest.approx(6.336e-6))
    assert m.stats.rse == pytest.approx(4.0919832619914645e-07 / math.sqrt(80) / 5.488400009926404e-06)
    # noise 7.5% > max-noise 1.58%, and 7 ms of its 2 s timeout used: nvbench's noise-stability rule ended it
    # (the live replay of its samples said the same)
    assert m.stop_reason == "noise-stable" and m.seconds == pytest.approx(0.00737, rel=1e-3)


def test_skipped_state_is_an_error():
    doc = _document([])
    doc["benchmarks"][0]["states"][0].update(is_skipped=True, skip_reason="no device")
    with pytest.raises(ValueError, match="no device"):
        measurement_from_json(doc, SETTINGS)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def test_missing_cuda_bench_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda.bench", None)   # makes `import cuda.bench` fail
    with pytest.raises(RuntimeError, match="pip install cuda-bench") as info:
        nvbench_timer.import_cuda_bench()
    assert "\n" not in str(info.value)
    fn = lambda x: x[0]   # noqa: E731
    with pytest.raises(RuntimeError, match="pip install cuda-bench"):
        measure_nvbench(fn, [(torch.zeros(1),)], device=CUDA0, rule=StoppingRule(), mode="eager", cold_l2=True,
                        l2_bytes=0)


@pytest.mark.parametrize("mode, cold_l2, device, message", [
    ("graph", True, CUDA0, "graph mode is not supported with --timer nvbench"),
    ("eager", False, CUDA0, "warm-L2 timing is not supported with --timer nvbench"),
    ("eager", True, torch.device("cpu"), "needs a CUDA device"),
    ("bogus", True, CUDA0, "unknown timing mode"),
])
def test_unsupported_requests_are_value_errors(mode, cold_l2, device, message):
    with pytest.raises(ValueError, match=message):
        measure_nvbench(lambda x: x, [(1,)], device=device, rule=StoppingRule(), mode=mode, cold_l2=cold_l2,
                        l2_bytes=0)
    with pytest.raises(ValueError, match="at least one input set"):
        measure_nvbench(lambda x: x, [], device=CUDA0, rule=StoppingRule(), mode="eager", cold_l2=True, l2_bytes=0)


# ---------------------------------------------------------------------------------------------
# the once-per-process runner, against a stand-in for cuda.bench
# ---------------------------------------------------------------------------------------------
class _FakeStream:
    def addressof(self):
        return 0xABC


class _FakeState:
    """Like nvbench's state: exec runs the warm-up run, then samples until min_samples (plus one throttled,
    discarded sample), then writes the sample-times sidecar as --jsonbin does."""

    def __init__(self, json_path):
        self.json_path, self.files, self.execs = json_path, 0, []
        self.min_samples = self.timeout = self.warmup_runs = None

    def get_stream(self):
        return _FakeStream()

    def set_min_samples(self, n):
        self.min_samples = n

    def set_timeout(self, t):
        self.timeout = t

    def set_cold_warmup_runs(self, n):
        self.warmup_runs = n

    def exec(self, launcher, *, batched=None):
        assert batched is False
        launch = types.SimpleNamespace(get_stream=_FakeStream)
        for _ in range(self.warmup_runs + 1 + self.min_samples):   # warm-up, one discarded, samples
            launcher(launch)
        times = [1e-3 * (1 + 1e-4 * (i % 2)) for i in range(self.min_samples)]
        os.makedirs(self.json_path + "-bin", exist_ok=True)
        with open(os.path.join(self.json_path + "-bin", f"{self.files}.bin"), "wb") as f:
            f.write(struct.pack(f"<{len(times)}f", *times))
        self.files += 1
        self.execs.append((self.min_samples, self.timeout))


class _FakeBench:
    """register + run_all_benchmarks with nvbench's once-only rule."""

    _nvbench = object()

    def __init__(self):
        self.body = self.benchmark = self.state = None
        self.ran = False

    def register(self, fn):
        if self.ran:
            raise RuntimeError("Can not register more benchmarks after benchmark was run")
        self.body = fn
        self.benchmark = types.SimpleNamespace(name=fn.__name__, settings=[])
        for name in ("set_stopping_criterion", "set_criterion_param_float64", "set_min_samples", "set_timeout"):
            setattr(self.benchmark, name, lambda *a, name=name: self.benchmark.settings.append((name, *a)))
        return self.benchmark

    def run_all_benchmarks(self, argv):
        if self.ran:
            raise RuntimeError("Benchmarks were already executed")
        self.ran = True
        json_path = argv[argv.index("--jsonbin") + 1]
        self.state = _FakeState(json_path)
        self.body(self.state)
        with open(json_path, "w") as f:
            json.dump({"benchmarks": []}, f)


@pytest.fixture
def fake_bench(monkeypatch):
    bench = _FakeBench()
    monkeypatch.setattr(nvbench_timer, "import_cuda_bench", lambda: bench)
    monkeypatch.setattr(nvbench_timer, "_use_stream", lambda ptr, index: contextlib.nullcontext())
    monkeypatch.setattr(nvbench_timer, "_sync_current_stream", lambda: None)
    monkeypatch.setattr(nvbench_timer, "_bind_device", lambda index: None)
    monkeypatch.setattr(nvbench_timer, "_sync_device", lambda device: None)
    saved = nvbench_timer._SESSION
    nvbench_timer._SESSION = None
    yield bench
    nvbench_timer.shutdown()
    nvbench_timer._SESSION = saved


def test_one_nvbench_run_serves_every_case(fake_bench, tmp_path):
    seen = []

    def fn(x):
        seen.append(x[0])
        return x[0]

    inputs = [(0,), (1,), (2,)]
    rule = StoppingRule(min_samples=10, budget_s=1.0)
    m1 = measure_nvbench(fn, inputs, device=CUDA0, rule=rule, mode="eager", cold_l2=True, l2_bytes=0)
    assert fake_bench.benchmark.name == nvbench_timer.BENCHMARK_NAME
    assert ("set_criterion_param_float64", "max-noise", settings_for(rule).max_noise) in fake_bench.benchmark.settings
    assert (m1.timer, m1.clock, m1.mode, m1.cold_l2, m1.input_sets) == ("nvbench", "nvbench-cuda-events", "eager",
                                                                        True, 3)
    assert m1.stats.n == 10 and len(m1.samples) == 10 and m1.stop_reason == "converged"
    assert m1.stats.median == pytest.approx(1e-3, rel=1e-3)
    assert m1.dropped_batches == 1                      # the launch nvbench threw away
    assert m1.warmup_calls >= len(inputs) + 1           # ours (every input set) and nvbench's
    # our warm-up rotates from input 0, then nvbench's launches rotate from input 0 again, call by call
    launches = seen[m1.warmup_calls - 1:]
    assert launches == [i % 3 for i in range(len(launches))]

    # a second case: same run, same state, its own min-samples and timeout
    rule2 = StoppingRule(min_samples=10, budget_s=3.0)
    m2 = measure_nvbench(fn, inputs[:1], device=CUDA0, rule=rule2, mode="eager", cold_l2=True, l2_bytes=0)
    assert m2.stats.n == 10 and m2.input_sets == 1
    assert fake_bench.state.execs == [(10, 1.0), (10, 3.0)]
    assert not os.listdir(fake_bench.state.json_path + "-bin")   # sample files are consumed

    # what one run cannot change: the device and the stdrel parameters
    with pytest.raises(RuntimeError, match="on cuda:0"):
        measure_nvbench(fn, inputs, device=torch.device("cuda", 1), rule=rule, mode="eager", cold_l2=True, l2_bytes=0)
    with pytest.raises(RuntimeError, match="stopping criterion is fixed"):
        measure_nvbench(fn, inputs, device=CUDA0, rule=StoppingRule(target_rse=0.01), mode="eager", cold_l2=True,
                        l2_bytes=0)

    kept = nvbench_timer.shutdown(keep_json=str(tmp_path / "doc.json"))
    assert kept and json.load(open(kept)) == {"benchmarks": []}
    with pytest.raises(RuntimeError, match="has ended"):
        measure_nvbench(fn, inputs, device=CUDA0, rule=rule, mode="eager", cold_l2=True, l2_bytes=0)


def test_a_failing_case_does_not_end_the_run(fake_bench):
    def broken(x):
        raise KeyError("boom")

    rule = StoppingRule()
    with pytest.raises(KeyError, match="boom"):
        measure_nvbench(broken, [(0,)], device=CUDA0, rule=rule, mode="eager", cold_l2=True, l2_bytes=0)
    m = measure_nvbench(lambda x: x, [(0,)], device=CUDA0, rule=rule, mode="eager", cold_l2=True, l2_bytes=0)
    assert m.stats.n == 10


# ---------------------------------------------------------------------------------------------
# on a GPU with cuda-bench
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_nvbench_agrees_with_own_timer_on_a_matmul():
    pytest.importorskip("cuda.bench")
    device = torch.device("cuda", torch.cuda.current_device())
    l2_bytes = torch.cuda.get_device_properties(device).L2_cache_size
    a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    b = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    fn = lambda x: torch.mm(*x)   # noqa: E731
    rule = StoppingRule()
    own = timing.measure(fn, [(a, b)], device=device, rule=rule, mode="eager", cold_l2=True, l2_bytes=l2_bytes)
    nvb = measure_nvbench(fn, [(a, b)], device=device, rule=rule, mode="eager", cold_l2=True, l2_bytes=l2_bytes)
    assert (nvb.timer, nvb.clock, nvb.input_sets) == ("nvbench", "nvbench-cuda-events", 1)
    assert nvb.stats.n == len(nvb.samples) >= rule.min_samples
    assert nvb.stop_reason in ("converged", "noise-stable", "budget")
    assert nvb.stats.median == pytest.approx(own.stats.median, rel=0.10), (own.stats, nvb.stats)
