"""The multi-GPU executor (`--gpus`, fp4bench.runner.execute): cases handed out to lanes from one queue, each
spec filled in with its lane's device facts, the hooks called one at a time, records merged in plan order.

On the CPU: fake executors whose lanes stand for GPUs, and one run through two real worker processes."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict

import pytest

from fp4bench.case import CaseRecord, CaseSpec, CaseStatus
from fp4bench.pipeline import run_case
from fp4bench.problem import Shape
from fp4bench.runner import GpuContext, InProcessExecutor, Plan, WorkerExecutor, execute

L2 = {0: 50 << 20, 1: 60 << 20, 2: 70 << 20}


def contexts(lanes) -> dict:
    """Each lane's facts, distinct per lane so that a spec shows which lane filled it in."""
    return {lane: asdict(GpuContext("cuda", index=lane, physical=10 + lane, l2_bytes=L2[lane],
                                    ceilings={"lane": lane})) for lane in lanes}


def plan(n: int) -> Plan:
    return Plan([CaseSpec("torch-ref", "nvfp4", Shape(16 * (i + 1), 32, 64)) for i in range(n)])


class FakeExecutor:
    """Lanes that stand for GPUs: `call` records which lane got which spec and returns a record made from it.

    `delay[lane]` seconds per call make lanes finish out of plan order; `outcome(spec)` may return a crash."""

    def __init__(self, lanes, delay=None, outcome=None):
        self.lanes, self.delay, self.outcome = lanes, delay or {}, outcome
        self.calls: list[tuple[int, CaseSpec]] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def call(self, lane, func, spec):
        assert func is run_case
        with self._lock:
            self.calls.append((lane, spec))
            self.threads.add(threading.current_thread().name)
        time.sleep(self.delay.get(lane, 0.0))
        if self.outcome is not None and (crash := self.outcome(spec)) is not None:
            return crash
        return "ok", CaseRecord.ended(spec, CaseStatus.PASS, f"lane {lane}"), None


def test_every_case_runs_once_on_some_lane_and_records_come_back_in_plan_order():
    specs = plan(9)
    # Lane 0 is slow: its cases finish after later ones of the other lanes.
    ex = FakeExecutor([0, 1, 2], delay={0: 0.08, 1: 0.01, 2: 0.01})
    done_order = []
    records = execute(specs, ex, contexts(ex.lanes), on_done=lambda i, r: done_order.append(i))
    assert [r.shape for r in records] == [s.shape for s in specs.cases]
    assert sorted(s.shape.m for _, s in ex.calls) == [s.shape.m for s in specs.cases]   # once each
    assert sorted(done_order) == list(range(9)) and done_order != list(range(9))
    # Each spec carries the facts of the lane that ran it, and its record says which GPU that was.
    for lane, spec in ex.calls:
        assert (spec.device, spec.gpu, spec.gpu_physical, spec.l2_bytes, spec.ceilings) == \
            ("cuda", lane, 10 + lane, L2[lane], {"lane": lane})
    by_shape = {s.shape: lane for lane, s in ex.calls}
    assert all(r.gpu == 10 + by_shape[r.shape] and r.reason == f"lane {by_shape[r.shape]}" for r in records)
    assert len(ex.threads) == 3 and threading.current_thread().name not in ex.threads


def test_a_busy_lane_does_not_hold_back_the_others():
    specs, released = plan(6), threading.Event()
    counts = {0: 0, 1: 0}

    class OneSlowLane(FakeExecutor):
        def call(self, lane, func, spec):
            counts[lane] += 1
            if lane == 0:
                assert released.wait(30), "lane 1 never finished the other cases"
            elif counts[1] >= len(specs.cases) - 1:
                released.set()
            return super().call(lane, func, spec)

    records = execute(specs, OneSlowLane([0, 1]), contexts([0, 1]))
    assert counts[0] <= 1 and counts[0] + counts[1] == 6       # lane 1 took every case lane 0 could not
    assert [r.shape for r in records] == [s.shape for s in specs.cases]


def test_hooks_run_one_at_a_time_with_the_plan_index_and_finish_replaces_the_record():
    specs = plan(8)
    active, overlaps, started, finished = [0], [], {}, []
    guard = threading.Lock()

    def hook(log):
        def heard(i, item):
            with guard:
                active[0] += 1
                overlaps.append(active[0])
            time.sleep(0.002)             # long enough for another lane's hook to overlap, were it allowed
            log(i, item)
            with guard:
                active[0] -= 1
        return heard

    def finish(lane, spec, record):
        assert spec.gpu == lane and record.reason == f"lane {lane}"
        return record.but(notes=(f"finished on {lane}",))

    ex = FakeExecutor([0, 1, 2], delay={1: 0.01})
    records = execute(specs, ex, contexts(ex.lanes), hook(started.__setitem__),
                      hook(lambda i, r: finished.append((i, r))), finish)
    assert max(overlaps) == 1                                      # never two hooks at once
    assert sorted(started) == list(range(8))
    assert all(started[i].shape == specs.cases[i].shape and started[i].device == "cuda" for i in started)
    # on_done hears the finished record; the merged result holds it too
    assert all(r.shape == specs.cases[i].shape and r.notes == (f"finished on {r.gpu - 10}",) for i, r in finished)
    assert [r.notes for r in records] == [dict(finished)[i].notes for i in range(8)]


def test_a_crashed_or_hung_case_is_an_error_record_and_the_lane_goes_on():
    specs = plan(5)

    def outcome(spec):
        return {32: ("crashed", None, "worker died: signal 11 (SIGSEGV)"),
                48: ("timeout", None, "no answer within 3 s")}.get(spec.shape.m)

    ex = FakeExecutor([0, 1], outcome=outcome)
    records = execute(specs, ex, contexts(ex.lanes))
    assert [r.status for r in records] == [CaseStatus.PASS, CaseStatus.ERROR, CaseStatus.ERROR, CaseStatus.PASS,
                                           CaseStatus.PASS]
    assert records[1].reason == "crashed: worker died: signal 11 (SIGSEGV)"
    assert records[2].reason == "timed out: no answer within 3 s"
    assert records[1].gpu in (10, 11) and records[1].kernel == "torch-ref"


def test_one_lane_runs_in_the_callers_thread():
    ex = FakeExecutor([None])
    records = execute(plan(3), ex, {None: asdict(GpuContext())})
    assert ex.threads == {threading.current_thread().name}
    assert [r.status for r in records] == [CaseStatus.PASS] * 3 and {s.device for _, s in ex.calls} == {"cpu"}


@pytest.mark.slow
def test_two_worker_lanes_give_the_records_of_one_lane():
    # Real cases (torch-ref, checked on the CPU) through two worker processes, against the in-process run.
    specs = Plan([CaseSpec("torch-ref", fmt, Shape(m, 64, 128)) for fmt in ("nvfp4", "mxfp4") for m in (16, 40)])
    lanes = [0, 1]
    ctx = {lane: asdict(GpuContext(physical=lane)) for lane in lanes}
    ex = WorkerExecutor(lanes, timeout_s=120)
    try:
        spread = execute(specs, ex, ctx)
    finally:
        ex.close()
    alone = execute(specs, InProcessExecutor([None]), {None: asdict(GpuContext())})
    assert [r.status for r in spread] == [CaseStatus.PASS] * 4
    assert [(r.kernel, r.format, r.shape, r.check) for r in spread] == \
        [(r.kernel, r.format, r.shape, r.check) for r in alone]
    assert {r.gpu for r in spread} <= {0, 1}
