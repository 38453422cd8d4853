"""The tuned-incumbent rule of `tune` / `run --tune` (fp4bench.pipeline._tune): the stored configuration stays
unless a challenger is faster by more than twice both measurements' noise (their standard errors added in
quadrature); a configuration that cannot run is recorded and skipped.

The candidates' times are given, not measured (the timer is replaced), so every case of the rule is exact."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fp4bench import config_table, pipeline, timing
from fp4bench.arch import Target
from fp4bench.case import CaseSpec
from fp4bench.formats import gemm_format
from fp4bench.kernels.base import Kernel
from fp4bench.problem import Shape
from fp4bench.timing import TIMER_NVBENCH, TimingOptions

GPU = "NVIDIA H200"
SHAPE = Shape(128, 7168, 2048, seed=3)
A, B, C = {"tile": "A"}, {"tile": "B"}, {"tile": "C"}


class CandidateKernel(Kernel):
    """A kernel whose launch configurations are A, B and C; its prepared callable returns its configuration."""

    name = "tunable"
    formats = ("nvfp4",)

    def __init__(self, refused=()):
        self.refused = refused

    def tuning_candidates(self, problem):
        return [A, B, C]

    def prepare_config(self, problem, config):
        if config in self.refused:
            raise RuntimeError("out of shared memory")
        return lambda data: config

    def launch_config(self, problem):
        return {"source": "tuned"}

    def prepare(self, problem):
        return self.prepare_config(problem, A)


@pytest.fixture
def tuned(tmp_path, monkeypatch):
    """tune(times, kernel=..., stored=...) -> (the stored entry, the case, the chosen callable). `times` maps a
    tile to (median_us, rse); `stored` is the table's entry before tuning (the incumbent)."""
    monkeypatch.setenv(config_table.TABLE_DIR_ENV, str(tmp_path))
    config_table._cached_table.cache_clear()
    timers = []

    def tune(times, kernel=None, stored=None):
        def time_kernel(fn, inputs, *, device, options, l2_bytes=0, mode=None):
            timers.append(options.timer)
            median_us, rse = times[fn(None)["tile"]]
            return SimpleNamespace(stats=SimpleNamespace(median=median_us * 1e-6, rse=rse))

        monkeypatch.setattr(timing, "time_kernel", time_kernel)
        if stored is not None:
            config_table.store_entry(GPU, "tunable", "nvfp4", SHAPE, {"config": stored, "median_us": 1.0})
        spec = CaseSpec("tunable", "nvfp4", SHAPE, device="cuda", timing=TimingOptions(timer=TIMER_NVBENCH),
                        tune=True)
        case = pipeline._Case(spec, gemm_format("nvfp4"))
        case.kernel, case.target = kernel or CandidateKernel(), Target("cuda", 0, (9, 0), GPU)
        fn = pipeline._tune(case, SimpleNamespace(data=()))
        config_table._cached_table.cache_clear()
        entry = config_table.table_for(GPU).lookup("tunable", "nvfp4", SHAPE)
        return entry, case, fn

    tune.timers = timers
    return tune


def test_without_an_incumbent_the_fastest_wins(tuned):
    entry, case, fn = tuned({"A": (100.0, 0.01), "B": (99.5, 0.01), "C": (120.0, 0.01)})
    assert entry["config"] == B and fn(None) == B and entry["median_us"] == pytest.approx(99.5)
    assert [t["config"] for t in entry["candidates"]] == [A, B, C] and case.values["tuning"] == \
        tuple(entry["candidates"])
    assert set(tuned.timers) == {timing.TIMER_OWN}     # tuning always uses fp4bench's own timer


def test_the_incumbent_stays_when_the_challenger_is_faster_within_the_noise(tuned):
    # B is 2% faster than the stored A, but 2 x hypot(1% of each) is 2.8%: not beyond the noise.
    entry, _, fn = tuned({"A": (100.0, 0.01), "B": (98.0, 0.01), "C": (120.0, 0.01)}, stored=A)
    assert entry["config"] == A and fn(None) == A and entry["median_us"] == pytest.approx(100.0)


def test_a_challenger_faster_beyond_the_noise_replaces_the_incumbent(tuned):
    entry, _, fn = tuned({"A": (100.0, 0.01), "B": (97.0, 0.01), "C": (120.0, 0.01)}, stored=A)
    assert entry["config"] == B and fn(None) == B


def noisy(median_us: float, noise_us: float) -> dict:
    """A candidate's time: its median and its noise (rse x median), in microseconds."""
    return {"median_us": median_us, "rse": noise_us / median_us}


def test_the_margin_is_twice_both_noises_added_in_quadrature():
    rule = pipeline._faster_beyond_noise
    incumbent = noisy(64.0, 4.0)
    assert rule(noisy(52.0, 3.0), incumbent)          # 12 us faster > 2 x hypot(3, 4) = 10 us (a sum: 14)
    assert not rule(noisy(55.0, 3.0), incumbent)      # 9 us < 10 us (the larger noise alone would allow it)
    assert not rule(noisy(60.0, 0.0), noisy(64.0, 2.0))   # exactly twice the noise is not more
    assert rule(noisy(59.5, 0.0), noisy(64.0, 2.0))
    # Without a noise estimate any speed-up counts, and a tie keeps the incumbent.
    assert rule({"median_us": 99.9, "rse": None}, {"median_us": 100.0, "rse": None})
    assert not rule(noisy(100.0, 0.0), noisy(100.0, 0.0))


def test_an_incumbent_that_no_longer_runs_loses_to_the_fastest(tuned):
    entry, _, _ = tuned({"A": (100.0, 0.01), "B": (99.0, 0.01), "C": (98.5, 0.01)},
                        kernel=CandidateKernel(refused=(A,)), stored=A)
    assert entry["config"] == C
    (failed,) = [t for t in entry["candidates"] if t["config"] == A]
    assert failed["median_us"] is None and failed["rse"] is None and "out of shared memory" in failed["error"]


def test_an_incumbent_that_is_no_longer_a_candidate_is_not_kept(tuned):
    entry, _, _ = tuned({"A": (100.0, 0.01), "B": (99.9, 0.01), "C": (120.0, 0.01)}, stored={"tile": "gone"})
    assert entry["config"] == B
