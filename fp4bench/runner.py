"""Executing a plan of cases: in this process, or in one worker process per GPU, with results in plan order.

Each case is `pipeline.run_case(spec)` (check, then time and re-check when the spec carries timing options).
With worker processes (`isolation="process"`, the default) a kernel that crashes or hangs costs its own
case, recorded as an error with the reason, and the worker is replaced. Multiple GPUs (`lanes=[0, 1, ...]`):
one worker per GPU, pinned with CUDA_VISIBLE_DEVICES; threads hand out cases from one queue.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import asdict, dataclass, replace
from typing import Callable

from .case import CaseRecord, CaseSpec, CaseStatus, one_line
from .pipeline import run_case


@dataclass
class GpuContext:
    """What a case needs to know about its device: where, how big L2 is, the ceilings for SOL."""

    device: str = "cpu"          # "cpu" or "cuda"
    index: int = 0               # the index this process sees
    physical: int | None = None  # the index on the host (reported)
    l2_bytes: int = 0
    ceilings: dict | None = None
    info: dict | None = None


def gpu_context(device: str, index: int, physical: int | None, measure_ceilings: bool) -> dict:
    """Module-level (worker-callable): this process's device facts and ceilings, as a GpuContext dict."""
    if device != "cuda":
        return asdict(GpuContext())
    from .device import ceilings_for, query_device

    info = query_device(index)
    ceilings = ceilings_for(index, measure_if_missing=measure_ceilings, quick=True)
    return asdict(GpuContext("cuda", index, physical, info.l2_bytes,
                             None if ceilings is None else ceilings.to_dict(), info.to_dict()))


class InProcessExecutor:
    """Runs every call here, one after another (one device)."""

    def __init__(self, lanes: list[int | None]):
        self.lanes = lanes

    def call(self, lane: int | None, func, *args) -> tuple[str, object, str | None]:
        try:
            return "ok", func(*args), None
        except Exception as e:
            return "crashed", None, f"raised {one_line(e)}"

    def close(self) -> None:
        pass


def pin_env(lane: int | None) -> dict[str, str]:
    """Environment that shows a worker only GPU `lane` (an index among the GPUs this process sees)."""
    if lane is None:
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")] if visible else None
    return {"CUDA_VISIBLE_DEVICES": ids[lane] if ids else str(lane)}


class WorkerExecutor:
    """One isolation.Worker per lane (a physical GPU, or None for an unpinned worker)."""

    def __init__(self, lanes: list[int | None], timeout_s: float):
        from .isolation import Worker

        self.lanes = lanes
        self.workers = {lane: Worker(env=pin_env(lane), timeout_s=timeout_s) for lane in lanes}

    def call(self, lane, func, *args):
        r = self.workers[lane].call(func, *args)
        return r.status, r.value, r.reason

    def close(self) -> None:
        for w in self.workers.values():
            w.close()


@dataclass
class Plan:
    """The cases of a run in report order, as specs without device facts (each lane fills in its own)."""

    cases: list[CaseSpec]


def crashed_record(spec: CaseSpec, status: str, reason: str | None) -> CaseRecord:
    """The record of a case whose worker died or hung: an error, untimed."""
    return CaseRecord.ended(spec, CaseStatus.ERROR, f"{'timed out' if status == 'timeout' else 'crashed'}: {reason}")


def execute(plan: Plan, executor, contexts: dict,
            on_start: Callable[[int, CaseSpec], None] | None = None,
            on_done: Callable[[int, CaseRecord], None] | None = None,
            finish: Callable[[int | None, CaseSpec, CaseRecord], CaseRecord] | None = None) -> list[CaseRecord]:
    """Run every case of `plan`, spreading them over the executor's lanes; records in plan order.

    `finish(lane, spec, record)`, when given, runs in the lane after each case and returns its final record
    (verify --sanitize adds its passes there, on the lane's GPU)."""
    todo: queue.Queue = queue.Queue()
    for i, case in enumerate(plan.cases):
        todo.put((i, case))
    results: dict[int, CaseRecord] = {}
    lock = threading.Lock()

    def lane_loop(lane):
        ctx = GpuContext(**contexts[lane])
        while True:
            try:
                i, case = todo.get_nowait()
            except queue.Empty:
                return
            spec = replace(case, device=ctx.device, gpu=ctx.index, gpu_physical=ctx.physical,
                           l2_bytes=ctx.l2_bytes, ceilings=ctx.ceilings)
            with lock:
                if on_start:
                    on_start(i, spec)
            status, value, reason = executor.call(lane, run_case, spec)
            record = value if status == "ok" else crashed_record(spec, status, reason)
            if finish:
                record = finish(lane, spec, record)
            with lock:
                results[i] = record
                if on_done:
                    on_done(i, record)

    threads = [threading.Thread(target=lane_loop, args=(lane,), daemon=True) for lane in executor.lanes]
    if len(threads) == 1:
        lane_loop(executor.lanes[0])   # no thread for the common case: tracebacks and Ctrl-C stay simple
    else:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return [results[i] for i in sorted(results)]
