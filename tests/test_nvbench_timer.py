"""The nvbench timing back-end: option mapping, nvbench's sample file, the errors, the once-per-process
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
from fp4bench.nvbench_timer import (
    NvbenchSettings,
    measure_nvbench,
    read_samples_file,
    settings_for,
    stdrel_stop_reason,
)
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
# nvbench's per-sample times file
# ---------------------------------------------------------------------------------------------
def test_samples_file_round_trip(tmp_path):
    path = tmp_path / "0.bin"
    path.write_bytes(struct.pack("<3f", 1e-3, 2e-3, 3e-3))
    assert read_samples_file(str(path)) == pytest.approx([1e-3, 2e-3, 3e-3], rel=1e-6)
    (tmp_path / "bad.bin").write_bytes(b"abc")
    with pytest.raises(ValueError):
        read_samples_file(str(tmp_path / "bad.bin"))


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
