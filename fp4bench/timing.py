"""Timing microsecond kernels: CUDA events on a GPU, perf_counter on the CPU; statistics; adaptive stopping.

Constraints the numbers rely on:
- Warm-up first: every input set is run at least once (and for `WARMUP_MIN_S`) before any sample is kept,
  so compilation, autotuning, handle creation and per-input preparation stay out of the numbers.
- Cold L2 by default: in eager mode a flush buffer larger than L2 is overwritten before every timed call
  (outside the events); in graph mode the flush cannot sit between replayed calls, so the calls rotate
  among enough input sets that their bytes exceed L2 (`input_sets_for_cold_l2`). `warm_l2` turns both off.
- The host stays ahead of the GPU: each batch of timed calls starts behind a spin kernel longer than the
  host needs to enqueue the batch, so no sample includes launch latency (`CudaEventTimer`).
- One sample is one call (eager) or one replay of `GRAPH_CALLS` calls divided by that number (graph).
- Which input each timed call takes, and what happens around the calls outside the timed region, is a
  `Rotation`'s business: the plain one rotates a fixed list of input sets; the case pipeline's
  (fp4bench.audit.TimedAudit) refills them between samples and checks sampled timed outputs. Its work runs
  before a batch, between a call's end event and the next call's start event, and after the batch's
  synchronisation, never between a start and an end event.
- Adaptive repetition (`StoppingRule`): stop once the relative standard error of the mean is under the
  target (0.5% by default) with at least `min_samples`, or when the time budget or `max_samples` runs out.
- CPU timings come from a host clock and are marked `clock="cpu"`; they are not comparable to GPU numbers.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

DEFAULT_TARGET_RSE = 0.005
DEFAULT_BUDGET_S = 2.0
DEFAULT_MIN_SAMPLES = 10
DEFAULT_MAX_SAMPLES = 10_000
WARMUP_MIN_S = 0.025
# Samples recorded between two host synchronisations: amortises the sync without delaying the stop check much.
SAMPLES_PER_BATCH = 10
# Calls captured in one CUDA graph; a replay's time over this number is one graph-mode sample.
GRAPH_CALLS = 20
# Flush buffers and rotated input sets exceed L2 by this factor (L2 is not strictly LRU).
L2_MARGIN = 2
MAX_INPUT_SETS = 64
# The GPU's head start over the host at the start of each batch (see CudaEventTimer).
INITIAL_LEAD_S = 1e-3
MAX_LEAD_S = 50e-3
LEAD_MARGIN = 1.5
MODE_EAGER = "eager"
MODE_GRAPH = "graph"
MODES = (MODE_EAGER, MODE_GRAPH)
# Timing back-ends (`TimingOptions.timer`): this module's own timer, or NVIDIA nvbench through its Python
# package cuda-bench (fp4bench.nvbench_timer), for users who trust nvbench's numbers.
TIMER_OWN = "fp4bench"
TIMER_NVBENCH = "nvbench"
TIMERS = (TIMER_OWN, TIMER_NVBENCH)


# ---------------------------------------------------------------------------------------------
# statistics and the stopping rule
# ---------------------------------------------------------------------------------------------
def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of already sorted samples."""
    if not sorted_samples:
        raise ValueError("percentile of no samples")
    pos = (len(sorted_samples) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_samples) - 1)
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (pos - lo)


def relative_standard_error(samples: Sequence[float]) -> float:
    """Standard error of the mean over the mean; inf with fewer than two samples."""
    n = len(samples)
    if n < 2:
        return math.inf
    mean = statistics.fmean(samples)
    if mean == 0:
        return math.inf
    return statistics.stdev(samples) / math.sqrt(n) / abs(mean)


@dataclass(frozen=True)
class Stats:
    """Per-case statistics, in seconds."""

    n: int
    median: float
    mean: float
    std: float
    min: float
    max: float
    p10: float
    p90: float
    rse: float

    @classmethod
    def from_samples(cls, samples: Sequence[float]) -> "Stats":
        if not samples:
            raise ValueError("no samples to summarise")
        s = sorted(samples)
        std = statistics.stdev(s) if len(s) > 1 else 0.0
        return cls(n=len(s), median=percentile(s, 50), mean=statistics.fmean(s), std=std, min=s[0], max=s[-1],
                   p10=percentile(s, 10), p90=percentile(s, 90), rse=relative_standard_error(s))

    def to_dict(self) -> dict:
        d = asdict(self)
        if math.isinf(d["rse"]):
            d["rse"] = None   # JSON has no infinity
        return d


@dataclass(frozen=True)
class StoppingRule:
    target_rse: float = DEFAULT_TARGET_RSE
    budget_s: float = DEFAULT_BUDGET_S
    min_samples: int = DEFAULT_MIN_SAMPLES
    max_samples: int = DEFAULT_MAX_SAMPLES

    def __post_init__(self):
        if self.target_rse <= 0 or self.budget_s <= 0 or self.min_samples < 2 or self.max_samples < self.min_samples:
            raise ValueError(f"bad stopping rule {self}")

    def verdict(self, samples: Sequence[float], elapsed_s: float) -> str | None:
        """Why to stop now ('converged', 'budget', 'max-samples'), or None to keep sampling."""
        n = len(samples)
        if n >= self.max_samples:
            return "max-samples"
        if n >= self.min_samples and relative_standard_error(samples) < self.target_rse:
            return "converged"
        if elapsed_s >= self.budget_s and n >= 2:
            return "budget"
        return None


@dataclass(frozen=True)
class TimingOptions:
    """How cases are timed: the one declaration of the timing defaults (the CLI reads them from here)."""

    mode: str = MODE_EAGER
    cold_l2: bool = True
    target_rse: float = DEFAULT_TARGET_RSE
    budget_s: float = DEFAULT_BUDGET_S
    min_samples: int = DEFAULT_MIN_SAMPLES
    max_samples: int = DEFAULT_MAX_SAMPLES
    keep_samples: bool = True
    timer: str = TIMER_OWN
    # A CPU run is a smoke check: cases past this many GFLOP are skipped with the reason (None: no limit).
    cpu_max_gflop: float | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown timing mode {self.mode!r}; use {' or '.join(MODES)}")
        if self.timer not in TIMERS:
            raise ValueError(f"unknown timer {self.timer!r}; use {' or '.join(TIMERS)}")

    @property
    def rule(self) -> "StoppingRule":
        return StoppingRule(self.target_rse, self.budget_s, self.min_samples, self.max_samples)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# clocks
# ---------------------------------------------------------------------------------------------
Before = Callable[[int], None]
After = Callable[[int, object], None]


class Timer:
    """Times a batch of calls, call j preceded by an untimed `before(j)` and followed by an untimed
    `after(j, returned value)`; returns seconds per call."""

    clock: str

    def time_calls(self, calls: Sequence[Callable[[], object]], before: Before | None,
                   after: After | None = None) -> list[float]:
        raise NotImplementedError

    def synchronize(self) -> None:
        pass


class CpuTimer(Timer):
    clock = "cpu"

    def time_calls(self, calls, before, after=None):
        times = []
        for j, call in enumerate(calls):
            if before is not None:
                before(j)
            t0 = time.perf_counter()
            out = call()
            times.append(time.perf_counter() - t0)
            if after is not None:
                after(j, out)
        return times


class CudaEventTimer(Timer):
    """Events around each call on the current stream; one synchronisation per batch.

    The host must never fall behind the GPU, or a start event fires while the GPU waits for the next
    launch and the sample measures Python and launch latency instead of the kernel. So each batch starts
    with a spin kernel (`torch.cuda._sleep`) lasting longer than the host takes to enqueue the batch, and a
    batch whose enqueueing outlasted that lead is dropped and the lead raised (the lead is also adapted
    to the enqueue time the host shows batch by batch).
    """

    clock = "cuda-events"

    def __init__(self, device: torch.device):
        self.device = device
        self.lead_s = INITIAL_LEAD_S
        self.dropped_batches = 0

    def time_calls(self, calls, before, after=None):
        starts = [torch.cuda.Event(enable_timing=True) for _ in calls]
        ends = [torch.cuda.Event(enable_timing=True) for _ in calls]
        torch.cuda._sleep(int(self.lead_s * sleep_cycles_per_second(self.device)))
        t0 = time.perf_counter()
        for j, (call, start, end) in enumerate(zip(calls, starts, ends)):
            if before is not None:
                before(j)
            start.record()
            out = call()
            end.record()
            if after is not None:
                after(j, out)
        enqueue_s = time.perf_counter() - t0
        torch.cuda.synchronize(self.device)
        ran_dry = enqueue_s > self.lead_s and self.lead_s < MAX_LEAD_S
        self.lead_s = min(MAX_LEAD_S, max(INITIAL_LEAD_S, LEAD_MARGIN * enqueue_s))
        if ran_dry:
            self.dropped_batches += 1
            return []
        return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends)]

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)


_SLEEP_RATE: dict[int, float] = {}


def sleep_cycles_per_second(device: torch.device) -> float:
    """How many `torch.cuda._sleep` cycles pass per second on this device now (measured once)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SLEEP_RATE:
        cycles = 2_000_000
        torch.cuda._sleep(cycles)   # first launch loads the kernel
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        torch.cuda.synchronize(device)
        _SLEEP_RATE[index] = cycles / (start.elapsed_time(end) * 1e-3)
    return _SLEEP_RATE[index]


def timer_for(device: torch.device) -> Timer:
    return CudaEventTimer(device) if device.type == "cuda" else CpuTimer()


class L2Flusher:
    """Overwrites a buffer of `L2_MARGIN` x the L2 size, evicting earlier data from L2."""

    def __init__(self, device: torch.device, l2_bytes: int):
        self.buffer = torch.empty(max(l2_bytes, 1) * L2_MARGIN, dtype=torch.uint8, device=device)

    def __call__(self, _call: int = 0) -> None:
        self.buffer.fill_(0x5A)


def input_sets_for_cold_l2(bytes_per_set: int, l2_bytes: int) -> int:
    """Input sets to rotate among so that one pass over them exceeds L2 (at least 2, at most MAX_INPUT_SETS)."""
    if bytes_per_set <= 0:
        return MAX_INPUT_SETS
    return max(2, min(MAX_INPUT_SETS, math.ceil(L2_MARGIN * l2_bytes / bytes_per_set) + 1))


# ---------------------------------------------------------------------------------------------
# measuring one case
# ---------------------------------------------------------------------------------------------
@dataclass
class Measurement:
    stats: Stats
    samples: list[float] = field(repr=False)
    mode: str = MODE_EAGER
    clock: str = "cpu"
    cold_l2: bool = True
    input_sets: int = 1
    calls_per_sample: int = 1
    stop_reason: str = ""
    warmup_calls: int = 0
    seconds: float = 0.0
    dropped_batches: int = 0   # batches thrown away because the host fell behind the GPU
    timer: str = "fp4bench"    # the back-end that measured (TIMERS)

    @property
    def converged(self) -> bool:
        """Whether the stopping rule reached its noise target (not the budget or the sample cap)."""
        return self.stop_reason == "converged"

    def to_dict(self, keep_samples: bool = True) -> dict:
        d = {"stats": self.stats.to_dict(), "mode": self.mode, "clock": self.clock, "cold_l2": self.cold_l2,
             "input_sets": self.input_sets, "calls_per_sample": self.calls_per_sample,
             "stop_reason": self.stop_reason, "converged": self.converged, "warmup_calls": self.warmup_calls,
             "seconds": self.seconds, "dropped_batches": self.dropped_batches, "timer": self.timer}
        if keep_samples:
            d["samples"] = list(self.samples)
        return d


class Rotation:
    """The inputs of the timed calls: call i of the loop takes `inputs[i % len(inputs)]`, and nothing else
    happens around the calls. fp4bench.audit.TimedAudit overrides the hooks (all run outside the timed region):

      begin_batch(calls)   before a batch of eager calls: the input of each (refilled, prepared)
      begin_replays()      before a batch of graph replays (graph mode: refill the captured inputs in place)
      captured(outputs)    after graph capture: what each captured call returned, in capture order
      before_call(j)       just before call (or replay) j of the batch, before the L2 flush
      after_call(j, out)   just after call j's end event, with what it returned (None for a replay)
      end_batch()          after the batch's device-wide synchronisation
      finish(fn, m)        after sampling, with the measurement
    `batch_calls` is the number of eager calls per batch. Any hook may raise to end the measurement.
    """

    batch_calls = SAMPLES_PER_BATCH
    audited = False   # whether its hooks check the timed calls (they then need our own sampling loop)

    def __init__(self, inputs: Sequence):
        if not inputs:
            raise ValueError("measure needs at least one input set")
        self.inputs = list(inputs)
        self._next = 0

    def begin_batch(self, calls: int) -> list:
        chosen = [self.inputs[(self._next + j) % len(self.inputs)] for j in range(calls)]
        self._next += calls
        return chosen

    def begin_replays(self) -> None:
        pass

    def captured(self, outputs: list) -> None:
        pass

    def before_call(self, j: int) -> None:
        pass

    def after_call(self, j: int, out) -> None:
        pass

    def end_batch(self) -> None:
        pass

    def finish(self, fn, measurement: "Measurement") -> None:
        pass


def warm_up(fn, inputs: Sequence[tuple], synchronize: Callable[[], None]) -> int:
    """Call `fn` on every input set at least once and for WARMUP_MIN_S, synchronising after each round."""
    calls = 0
    start = time.perf_counter()
    while calls < len(inputs) or time.perf_counter() - start < WARMUP_MIN_S:
        fn(inputs[calls % len(inputs)])
        calls += 1
        if calls % len(inputs) == 0:
            synchronize()
    synchronize()
    return calls


def _capture_graph(fn, inputs: Sequence[tuple], calls: int):
    """A CUDA graph of `calls` calls rotating over `inputs` (captured on a side stream, as torch requires),
    and what each captured call returned."""
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    outputs = []
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph, stream=stream):
            for i in range(calls):
                outputs.append(fn(inputs[i % len(inputs)]))
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    return graph, outputs


def measure(fn: Callable[[tuple], object], inputs: Sequence[tuple] | Rotation, *, device: torch.device,
            rule: StoppingRule = StoppingRule(), mode: str = MODE_EAGER, cold_l2: bool = True,
            l2_bytes: int = 0, finish: bool = True) -> Measurement:
    """Time `fn` over `inputs` (a list of input sets, rotated call by call, or a `Rotation`) until `rule`
    says stop; then the rotation's `finish` (unless `finish` is False).

    Graph mode needs a CUDA device and a `fn` that allows capture; eager mode works anywhere.
    """
    rotation = inputs if isinstance(inputs, Rotation) else Rotation(inputs)
    if mode not in MODES:
        raise ValueError(f"unknown timing mode {mode!r}; use {' or '.join(MODES)}")
    if mode == MODE_GRAPH and device.type != "cuda":
        raise ValueError("graph mode needs a CUDA device")
    timer = timer_for(device)
    began = time.perf_counter()
    warmup = warm_up(fn, rotation.inputs, timer.synchronize)

    flush = L2Flusher(device, l2_bytes) if (cold_l2 and mode == MODE_EAGER and device.type == "cuda") else None

    def before(j: int) -> None:
        rotation.before_call(j)
        if flush is not None:
            flush()

    if mode == MODE_GRAPH:
        graph, outputs = _capture_graph(fn, rotation.inputs, GRAPH_CALLS)
        rotation.captured(outputs)
        graph.replay()   # the first replay uploads the graph
        timer.synchronize()
        replays = [graph.replay] * SAMPLES_PER_BATCH
        per_sample_calls = GRAPH_CALLS
    else:
        per_sample_calls = 1
        replays = None

    samples: list[float] = []
    start = time.perf_counter()
    stop = None
    while stop is None:
        if replays is None:
            calls = [lambda data=data: fn(data) for data in rotation.begin_batch(rotation.batch_calls)]
        else:
            rotation.begin_replays()
            calls = replays
        batch_samples = timer.time_calls(calls, before, rotation.after_call)   # ends with a device-wide sync
        rotation.end_batch()
        if not batch_samples and time.perf_counter() - start > rule.budget_s and len(samples) >= 2:
            stop = "budget"
        # The rule is asked once per batch: its standard error runs over every sample so far, and asking it
        # after each sample made the check quadratic in the sample count (seconds per case on a CPU).
        samples.extend(t / per_sample_calls for t in batch_samples[:rule.max_samples - len(samples)])
        if batch_samples:
            stop = rule.verdict(samples, time.perf_counter() - start)
    measurement = Measurement(stats=Stats.from_samples(samples), samples=samples, mode=mode, clock=timer.clock,
                              cold_l2=cold_l2, input_sets=len(rotation.inputs), calls_per_sample=per_sample_calls,
                              stop_reason=stop, warmup_calls=warmup, seconds=time.perf_counter() - began,
                              dropped_batches=getattr(timer, "dropped_batches", 0))
    if finish:
        rotation.finish(fn, measurement)
    return measurement


# nvbench drives its own sampling loop: a Rotation's checks run on a pass of this many batches of our own
# timer after nvbench's samples (their times are not kept).
NVBENCH_AUDIT_BATCHES = 2


def time_kernel(fn: Callable[[tuple], object], inputs: Sequence[tuple] | Rotation, *, device: torch.device,
                options: TimingOptions, l2_bytes: int = 0, mode: str | None = None) -> Measurement:
    """The one timing entry point: `fn` over `inputs` with the back-end, mode and stopping rule of `options`.

    `mode` overrides `options.mode` (the engine falls back to eager when a kernel cannot be captured)."""
    mode = options.mode if mode is None else mode
    if options.timer == TIMER_NVBENCH:
        from .nvbench_timer import measure_nvbench

        rotation = inputs if isinstance(inputs, Rotation) else Rotation(inputs)
        m = measure_nvbench(fn, rotation.inputs, device=device, rule=options.rule, mode=mode,
                            cold_l2=options.cold_l2, l2_bytes=l2_bytes)
        if rotation.audited:
            calls = NVBENCH_AUDIT_BATCHES * rotation.batch_calls
            audit_rule = StoppingRule(target_rse=DEFAULT_TARGET_RSE, budget_s=3600.0, min_samples=calls,
                                      max_samples=calls)
            measure(fn, rotation, device=device, rule=audit_rule, mode=mode, cold_l2=options.cold_l2,
                    l2_bytes=l2_bytes, finish=False)
            rotation.finish(fn, m)
        return m
    return measure(fn, inputs, device=device, rule=options.rule, mode=mode, cold_l2=options.cold_l2,
                   l2_bytes=l2_bytes)
