"""Timing back-end on NVIDIA nvbench, through its Python package cuda-bench (`import cuda.bench`).

`measure_nvbench` has the contract of `timing.measure`: it times `fn(inputs[i % len(inputs)])` and returns a
`timing.Measurement` (timer="nvbench", clock="nvbench-cuda-events"). What nvbench does and how our options map:

- Samples. nvbench's *cold* measurement (`State.exec(launcher, batched=False)`): before every sample it
  overwrites L2 (a memset of exactly the device's L2 size), synchronises, holds the stream behind its
  blocking kernel while the launcher enqueues one call, and times that call with CUDA events. A sample is
  one call (`calls_per_sample=1`). The per-sample times are read from nvbench's own binary sidecar file
  (`--jsonbin`, little-endian float32, written as soon as the measurement ends) and summarised with
  `Stats.from_samples`, so every statistic is computed exactly as for our own timer; `samples` holds them.
  (nvbench's own median and quartiles are nearest-rank, ours interpolate: they differ by at most the
  gap between two neighbouring samples.) nvbench's JSON document itself is not read.
- Stopping rule. nvbench's "stdrel" criterion stops once the *relative standard deviation of the samples*
  (std/mean, Bessel-corrected: a property of the kernel's noise, which does not shrink with more samples)
  is under "max-noise". Our target is the relative standard error of the *mean*, std/mean/sqrt(n). With
  n >= min_samples, std/mean < target_rse * sqrt(min_samples) implies std/mean/sqrt(n) < target_rse, so
  max-noise = target_rse * sqrt(min_samples): whenever nvbench stops on it, our target is met too; with
  more samples nvbench is stricter than our rule. min_samples -> nvbench's min-samples; budget_s ->
  nvbench's timeout (wall time of the sampling loop, warm-up excluded, like our budget); stdrel's
  "min-time" (a minimum of summed GPU time, default 0.5 s) -> 0, since our rule has no minimum time.
  max_samples has no nvbench counterpart and is not enforced (budget_s bounds the run).
- stop_reason replays nvbench's stdrel criterion (same arithmetic, on the float32 samples) at the last
  sample: "converged" when the noise was under max-noise, "noise-stable" when nvbench stopped because
  the noise estimate had stabilised above max-noise (its rule for kernels that never get quieter),
  "invalid-noise" after 64 unusable noise estimates, otherwise "budget" (nvbench's timeout ended it).
  `stats.rse` is always our own measure, from the samples.
- Warm-up: every input set at least once and for `timing.WARMUP_MIN_S` on nvbench's stream (as our own
  timer does), then nvbench's own single cold warm-up run. `warmup_calls` counts both.
- `dropped_batches` counts samples nvbench measured and threw away because the SM clock had throttled
  under 75% of its default rate (nvbench's default threshold; it then pauses before the next sample).
- Inputs rotate call by call through nvbench's warm-up run and samples (from input set 0).

Seen on an H200 (cuda-bench 0.3.0, torch 2.11, bf16 torch.mm, default rule): medians within 1-2% of our
timer at 4096^3; a few microseconds' kernels (256^3, 1024^3) about 5-7% lower under nvbench, with equal
minima (its flush writes 1x L2 where ours writes 2x, so a little of the inputs may survive it), and stopped
as "noise-stable" at 80-192 samples (their std/mean is 5-7%); 8192^3 5-9% lower, our own timer also
moving 5% between two runs (nvbench synchronises after every sample, so the GPU idles between samples and
likely holds higher clocks than under our back-to-back batches).

Constraints:
- Eager mode only: nvbench's Python API has no CUDA-graph measurement (its "batched" mode is plain
  back-to-back launches without L2 flushes), so mode="graph" raises ValueError.
- Cold L2 only: the cold measurement always flushes L2 and nothing turns that off, so cold_l2=False raises
  ValueError. nvbench sizes its flush from the device (exactly L2, where our timer writes twice L2), so
  `l2_bytes` is not used.
- fn must not synchronise the host with the GPU: nvbench's blocking kernel holds the stream until the
  launcher returns (our own timer's spin kernel has the same requirement).
- nvbench runs once per process: `run_all_benchmarks` refuses a second call and any registration after
  the first. So the first case starts one nvbench run on a background thread ("nvbench-runner") whose
  single benchmark state serves every later case (one `State.exec` per case, per-case min-samples and
  timeout set on the state). The stdrel parameters and the device are fixed for the process by the first
  case; a case that needs others raises RuntimeError. nvbench holds the GIL while it measures.
  The run ends at interpreter exit (or `shutdown()`); its printed output is off (`--quiet`) and its
  files live in a temporary directory that is removed then.
- Without cuda-bench (or without cuda-bindings or a driver it can load) the call raises RuntimeError with
  a one-line hint: pip install cuda-bench.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import glob
import math
import os
import queue
import shutil
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .timing import MODE_EAGER, MODE_GRAPH, MODES, Measurement, Stats, StoppingRule, warm_up

TIMER = "nvbench"
CLOCK = "nvbench-cuda-events"
INSTALL_HINT = "pip install cuda-bench"
BENCHMARK_NAME = "fp4bench_case"
STOPPING_CRITERION = "stdrel"
# nvbench's own warm-up runs per case (after ours); its default.
NVBENCH_WARMUP_RUNS = 1
# How long to wait for the runner thread to finish at shutdown (it writes nvbench's JSON document).
SHUTDOWN_TIMEOUT_S = 30.0

# nvbench 0.3.0's stdrel criterion, replayed in `stdrel_stop_reason` (nvbench/detail/stdrel_criterion.cxx
# and statistics.cuh).
NOISE_ESTIMATE_MIN_SAMPLES = 5
INVALID_NOISE_LIMIT = 64
NOISE_TRACKER_SIZE = 512
NOISE_STABILITY_WINDOW = 64
NOISE_STABILITY_INTERVAL = 16
NOISE_STABILITY_THRESHOLD = 0.05


# ---------------------------------------------------------------------------------------------
# import and argument checks
# ---------------------------------------------------------------------------------------------
def import_cuda_bench():
    """The `cuda.bench` module with its compiled extension loaded, or RuntimeError saying how to install it."""
    try:
        import cuda.bench as bench

        # The package picks its extension (cu12/cu13) from cuda-bindings' version and loads it lazily;
        # load it now so that a missing driver or cuda-bindings shows here, as this one error.
        bench._nvbench  # noqa: B018
    except (ImportError, OSError) as e:
        reason = " ".join(str(e).split())
        raise RuntimeError(f"the nvbench timer needs NVIDIA's cuda-bench package: {INSTALL_HINT} "
                           f"(import failed: {reason})") from e
    return bench


def check_supported(inputs: Sequence, device: torch.device, mode: str, cold_l2: bool) -> None:
    """ValueError for what nvbench cannot measure (checked before cuda-bench is imported)."""
    if not inputs:
        raise ValueError("measure needs at least one input set")
    if mode not in MODES:
        raise ValueError(f"unknown timing mode {mode!r}; use {' or '.join(MODES)}")
    if mode == MODE_GRAPH:
        raise ValueError("graph mode is not supported with --timer nvbench (nvbench's Python API has no CUDA-graph "
                         "measurement); use eager mode")
    if not cold_l2:
        raise ValueError("warm-L2 timing is not supported with --timer nvbench: its cold measurement flushes L2 "
                         "before every sample and cannot be told not to")
    if device.type != "cuda":
        raise ValueError("--timer nvbench needs a CUDA device")


# ---------------------------------------------------------------------------------------------
# the stopping rule in nvbench's terms
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NvbenchSettings:
    """nvbench's options for one case (fractions and seconds, as its Python API takes them)."""

    max_noise: float      # stdrel "max-noise": bound on the samples' std/mean (the CLI takes it in percent)
    min_time: float       # stdrel "min-time": summed GPU seconds before the criterion may stop
    min_samples: int
    timeout_s: float      # wall time of the sampling loop
    criterion: str = STOPPING_CRITERION

    @property
    def criterion_key(self) -> tuple:
        """What is fixed for the whole nvbench run (per process)."""
        return (self.criterion, self.max_noise, self.min_time)

    def cli_args(self) -> list[str]:
        """The same settings as nvbench command-line options (for reference and reproduction by hand)."""
        return ["--min-samples", str(self.min_samples), "--timeout", repr(self.timeout_s),
                "--stopping-criterion", self.criterion, "--max-noise", repr(self.max_noise * 100.0),
                "--min-time", repr(self.min_time)]


def settings_for(rule: StoppingRule) -> NvbenchSettings:
    """Map our stopping rule onto nvbench's (see the module docstring for why max-noise is what it is)."""
    return NvbenchSettings(max_noise=rule.target_rse * math.sqrt(rule.min_samples), min_time=0.0,
                           min_samples=rule.min_samples, timeout_s=rule.budget_s)


def runner_argv(device_index: int, json_path: str) -> list[str]:
    """run_all_benchmarks' arguments: our benchmark only, on one device, no printed output, samples to files."""
    return ["fp4bench-nvbench", "--quiet", "--jsonbin", json_path, "--benchmark", BENCHMARK_NAME,
            "--devices", str(device_index)]


def configure_benchmark(benchmark, settings: NvbenchSettings) -> None:
    """Set the per-run stopping parameters on the registered benchmark (its state copies them)."""
    benchmark.set_stopping_criterion(settings.criterion)
    benchmark.set_criterion_param_float64("max-noise", settings.max_noise)
    benchmark.set_criterion_param_float64("min-time", settings.min_time)
    benchmark.set_min_samples(settings.min_samples)
    benchmark.set_timeout(settings.timeout_s)


def _online_update(count: int, mean: float, var: float, x: float) -> tuple[int, float, float]:
    """nvbench's online_mean_variance.update: `var` is the biased (MLE) variance."""
    count += 1
    if count > 2:
        f = 1.0 / count
        diff = x - mean
        mean += f * diff
        diff2 = diff * diff
        var += f * ((diff2 - var) - f * diff2)
    elif count == 2:
        half_diff = 0.5 * (mean - x)
        mean = 0.5 * (mean + x)
        var = half_diff * half_diff
    else:
        mean = x
    return count, mean, var


def stdrel_stop_reason(samples: Sequence[float], settings: NvbenchSettings) -> str:
    """Why nvbench stopped after exactly these samples: its stdrel criterion replayed at the last one.

    nvbench checks after every sample: min-samples reached and the criterion finished, else its timeout.
    It stopped after the last sample, so a criterion not finished there means the timeout ended it."""
    n, mean, var = 0, 0.0, 0.0
    invalid = 0
    tracker: collections.deque = collections.deque(maxlen=NOISE_TRACKER_SIZE)
    for x in samples:
        n, mean, var = _online_update(n, mean, var, float(x))
        if n < NOISE_ESTIMATE_MIN_SAMPLES:
            continue
        unbiased = var / (1.0 - 1.0 / n) if var >= 0 else math.nan
        noise = math.sqrt(unbiased) / mean if (mean > 0 and math.isfinite(mean) and not math.isnan(unbiased)) \
            else math.nan
        if math.isfinite(noise):
            invalid = 0
            tracker.append(noise)
        else:
            invalid += 1
    if n < settings.min_samples:
        return "budget"
    if invalid >= INVALID_NOISE_LIMIT:
        return "invalid-noise"
    if mean * n <= settings.min_time or not tracker or invalid:
        return "budget"
    if tracker[-1] < settings.max_noise:
        return "converged"
    if len(tracker) > NOISE_STABILITY_WINDOW and n % NOISE_STABILITY_INTERVAL == 0:
        k, m, v = 0, 0.0, 0.0
        for noise in tracker:
            k, m, v = _online_update(k, m, v, noise)
        if math.isfinite(m) and math.isfinite(v) and v < (m * NOISE_STABILITY_THRESHOLD) ** 2:
            return "noise-stable"
    return "budget"


# ---------------------------------------------------------------------------------------------
# nvbench's per-sample times -> Measurement
# ---------------------------------------------------------------------------------------------
def read_samples_file(path: str) -> list[float]:
    """nvbench's sample-times sidecar: little-endian float32 seconds, one per sample."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) % 4:
        raise ValueError(f"{path}: size {len(data)} is not a multiple of 4 (float32)")
    return list(struct.unpack(f"<{len(data) // 4}f", data))


def measurement_from_samples(samples: Sequence[float], settings: NvbenchSettings, *, mode: str = MODE_EAGER,
                             cold_l2: bool = True, input_sets: int = 1, warmup_calls: int = 0,
                             seconds: float = 0.0, discarded: int = 0) -> Measurement:
    """A Measurement from nvbench's per-sample times (seconds per call)."""
    samples = [float(s) for s in samples]
    return Measurement(stats=Stats.from_samples(samples), samples=samples, mode=mode, clock=CLOCK,
                       cold_l2=cold_l2, input_sets=input_sets, calls_per_sample=1,
                       stop_reason=stdrel_stop_reason(samples, settings), warmup_calls=warmup_calls,
                       seconds=seconds, dropped_batches=discarded, timer=TIMER)


# ---------------------------------------------------------------------------------------------
# the nvbench run: one per process, on a background thread, serving one case at a time
# ---------------------------------------------------------------------------------------------
# Seams for the CUDA calls (the CPU tests replace them).
def _use_stream(stream_ptr: int, device_index: int):
    """Make torch launch on nvbench's stream (a context manager)."""
    return torch.cuda.stream(torch.cuda.ExternalStream(stream_ptr, device=torch.device("cuda", device_index)))


def _sync_current_stream() -> None:
    torch.cuda.current_stream().synchronize()


def _bind_device(device_index: int) -> None:
    torch.cuda.set_device(device_index)


def _sync_device(device: torch.device) -> None:
    torch.cuda.synchronize(device)


@dataclass
class _RawResult:
    samples: list[float]
    warmup_calls: int
    discarded: int


@dataclass
class _Job:
    fn: Callable
    inputs: Sequence
    settings: NvbenchSettings
    grad_enabled: bool
    inference_mode: bool
    done: threading.Event = field(default_factory=threading.Event)
    result: _RawResult | None = None
    error: BaseException | None = None


class _Session:
    """The process's one nvbench run. Its benchmark body runs on the runner thread and serves jobs from a
    queue until it gets None; each job is one `State.exec` of the same state."""

    def __init__(self, bench, device_index: int, settings: NvbenchSettings):
        self.bench = bench
        self.device_index = device_index
        self.criterion_key = settings.criterion_key
        self.pid = os.getpid()
        self.dir = tempfile.mkdtemp(prefix="fp4bench-nvbench-")
        self.json_path = os.path.join(self.dir, "nvbench.json")
        self.jobs: queue.Queue = queue.Queue()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.ended = False

        # nvbench names the benchmark after the function.
        def fp4bench_case(state):
            self._serve(state)

        assert fp4bench_case.__name__ == BENCHMARK_NAME
        configure_benchmark(bench.register(fp4bench_case), settings)
        self.thread = threading.Thread(target=self._run, args=(runner_argv(device_index, self.json_path),),
                                       name="nvbench-runner", daemon=True)
        self.thread.start()
        while not self.ready.wait(0.05):
            if not self.thread.is_alive():
                raise RuntimeError(f"nvbench did not start: {self.error}")

    # runner thread ---------------------------------------------------------------------------
    def _run(self, argv: list[str]) -> None:
        try:
            self.bench.run_all_benchmarks(argv)
        except BaseException as e:   # reported to the waiting caller
            self.error = e
        finally:
            self.ended = True
            self._fail_pending()

    def _fail_pending(self) -> None:
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.error = RuntimeError(f"the nvbench run ended: {self.error}")
                job.done.set()

    def _serve(self, state) -> None:
        self.ready.set()
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                job.result = self._measure(state, job)
            except BaseException as e:   # a failing fn is this case's error, not the run's end
                job.error = e
            finally:
                job.done.set()

    def _measure(self, state, job: _Job) -> _RawResult:
        _bind_device(self.device_index)
        state.set_min_samples(job.settings.min_samples)
        state.set_timeout(job.settings.timeout_s)
        state.set_cold_warmup_runs(NVBENCH_WARMUP_RUNS)
        fn, inputs = job.fn, job.inputs
        calls = 0

        def launcher(launch) -> None:
            nonlocal calls
            data = inputs[calls % len(inputs)]
            calls += 1
            with _use_stream(launch.get_stream().addressof(), self.device_index):
                fn(data)

        # Grad and inference mode are thread-local in torch: use the caller's.
        with torch.inference_mode(job.inference_mode), torch.set_grad_enabled(job.grad_enabled):
            with _use_stream(state.get_stream().addressof(), self.device_index):
                warmup = warm_up(fn, inputs, _sync_current_stream)
            self._clear_sidecars()
            state.exec(launcher, batched=False)
        samples = self._take_samples()
        discarded = max(0, calls - NVBENCH_WARMUP_RUNS - len(samples))
        return _RawResult(samples=samples, warmup_calls=warmup + NVBENCH_WARMUP_RUNS, discarded=discarded)

    def _sidecar_files(self, suffix: str) -> list[str]:
        def file_id(path):
            stem = os.path.splitext(os.path.basename(path))[0]
            return int(stem) if stem.isdigit() else -1

        return sorted(glob.glob(os.path.join(self.json_path + suffix, "*.bin")), key=file_id)

    def _clear_sidecars(self) -> None:
        for path in self._sidecar_files("-bin") + self._sidecar_files("-freqs-bin"):
            with contextlib.suppress(OSError):
                os.remove(path)

    def _take_samples(self) -> list[float]:
        files = self._sidecar_files("-bin")
        if not files:
            raise RuntimeError("nvbench recorded no samples for this case (every sample was discarded, e.g. for "
                               "GPU clock throttling, or its sample file could not be written)")
        samples = read_samples_file(files[-1])
        self._clear_sidecars()
        if not samples:
            raise RuntimeError("nvbench recorded no samples for this case")
        return samples

    # caller's side ---------------------------------------------------------------------------
    def usable_for(self, device_index: int, settings: NvbenchSettings) -> None:
        if self.pid != os.getpid():
            raise RuntimeError("the nvbench run belongs to the parent process; nvbench cannot run in a forked child")
        if self.ended:
            raise RuntimeError(f"the nvbench run has ended (nvbench runs once per process): {self.error}")
        if device_index != self.device_index:
            raise RuntimeError(f"nvbench runs once per process, on cuda:{self.device_index}; "
                               f"this case is on cuda:{device_index}")
        if settings.criterion_key != self.criterion_key:
            raise RuntimeError(f"nvbench runs once per process, so its stopping criterion is fixed by the first "
                               f"case: {self.criterion_key}; this case asks for {settings.criterion_key} "
                               f"(target_rse and min_samples set max-noise)")

    def submit(self, fn, inputs: Sequence, settings: NvbenchSettings) -> _RawResult:
        job = _Job(fn=fn, inputs=inputs, settings=settings, grad_enabled=torch.is_grad_enabled(),
                   inference_mode=torch.is_inference_mode_enabled())
        self.jobs.put(job)
        # Poll slowly: nvbench holds the GIL while it measures, and each wake-up asks for it.
        while not job.done.wait(0.5):
            if not self.thread.is_alive():
                self._fail_pending()
                if not job.done.is_set():
                    raise RuntimeError(f"the nvbench run ended: {self.error}")
        if job.error is not None:
            raise job.error
        return job.result

    def close(self, keep_json: str | None = None) -> str | None:
        """End the nvbench run (nvbench then writes its JSON document) and remove its files;
        `keep_json`: copy the document there first. Returns where it was kept."""
        kept = None
        if not self.ended and self.pid == os.getpid():
            self.jobs.put(None)
            self.thread.join(SHUTDOWN_TIMEOUT_S)
        if keep_json is not None and os.path.isfile(self.json_path):
            shutil.copyfile(self.json_path, keep_json)
            kept = keep_json
        if self.pid == os.getpid():
            shutil.rmtree(self.dir, ignore_errors=True)
        return kept


_SESSION: _Session | None = None
_SESSION_LOCK = threading.Lock()


def _session_for(bench, device_index: int, settings: NvbenchSettings) -> _Session:
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = _Session(bench, device_index, settings)
            atexit.register(shutdown)
        _SESSION.usable_for(device_index, settings)
        return _SESSION


def shutdown(keep_json: str | None = None) -> str | None:
    """End this process's nvbench run (measure_nvbench raises afterwards: nvbench cannot run again).
    `keep_json`: copy nvbench's JSON document of the whole run there. Runs at interpreter exit."""
    with _SESSION_LOCK:
        session = _SESSION
    return None if session is None else session.close(keep_json)


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------
def measure_nvbench(fn: Callable[[tuple], object], inputs: Sequence[tuple], *, device: torch.device,
                    rule: StoppingRule, mode: str, cold_l2: bool, l2_bytes: int) -> Measurement:
    """Time `fn` over `inputs` (rotated call by call) with nvbench; the contract of `timing.measure`."""
    began = time.perf_counter()
    check_supported(inputs, device, mode, cold_l2)
    bench = import_cuda_bench()
    settings = settings_for(rule)
    index = device.index if device.index is not None else torch.cuda.current_device()
    session = _session_for(bench, index, settings)
    # The inputs were made on the caller's stream; nvbench's stream must find them complete.
    _sync_device(device)
    raw = session.submit(fn, inputs, settings)
    return measurement_from_samples(raw.samples, settings, mode=mode, cold_l2=cold_l2, input_sets=len(inputs),
                                    warmup_calls=raw.warmup_calls, seconds=time.perf_counter() - began,
                                    discarded=raw.discarded)
