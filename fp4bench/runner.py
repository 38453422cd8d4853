"""The benchmark engine: for each format, kernel and shape, check correctness, then time what passed.

One case is `run_case(spec) -> dict`, a module-level function with a picklable dict in and out, so that it
runs either in this process (`isolation="none"`, used by fast CPU tests) or in a worker process through
`fp4bench.isolation.Worker.call` (`isolation="process"`, the default: a kernel that crashes or hangs costs
its own case, not the run). A case:
  1. `harness.verify_case` on `check_seeds` fresh random inputs (poisoned, guarded output; integrity checks).
     A case that fails or errors here is reported as such and never timed; a skipped case keeps its reason.
  2. `prepare` once more (builds and autotuning are cached by the kernels) and `timing.measure` over
     input sets drawn with seed, seed + 42, ... (the competition's stride): cold L2 by default.
  3. `harness.recheck_case` on inputs no earlier call saw: a kernel that turns stale after its first
     calls fails here, and its timing is dropped.
Multiple GPUs (`gpus=[0, 1, ...]`): one worker process per GPU, pinned with CUDA_VISIBLE_DEVICES; threads
hand out cases from one queue; results are merged in plan order.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from .harness import STATUS_ERROR, STATUS_FAIL, STATUS_PASS, STATUS_SKIP, one_line

SEED_STRIDE = 42
ISOLATION_MODES = ("process", "none")
# A worker that answers nothing for this long is killed and the case recorded as a timeout.
DEFAULT_CASE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class TimingOptions:
    mode: str = "eager"
    cold_l2: bool = True
    target_rse: float = 0.005
    budget_s: float = 2.0
    min_samples: int = 10
    max_samples: int = 10_000
    keep_samples: bool = True
    # A CPU run is a smoke check: cases past this many GFLOP are skipped with the reason (None: no limit).
    cpu_max_gflop: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GpuContext:
    """What a case needs to know about its device: where, how big L2 is, the ceilings for SOL."""

    device: str = "cpu"          # "cpu" or "cuda"
    index: int = 0               # the index this process sees
    physical: int | None = None  # the index on the host (reported)
    l2_bytes: int = 0
    ceilings: dict | None = None
    info: dict | None = None


def case_spec(kernel: str, fmt: str, shape: dict, ctx: GpuContext, timing: TimingOptions,
              check_seeds: int = 2) -> dict:
    return {"kernel": kernel, "format": fmt, "shape": dict(shape), "device": ctx.device, "gpu": ctx.index,
            "gpu_physical": ctx.physical, "l2_bytes": ctx.l2_bytes, "ceilings": ctx.ceilings,
            "timing": timing.to_dict(), "check_seeds": check_seeds}


def _timing_sets(shape, fmt, opts: TimingOptions, l2_bytes: int, device_type: str) -> int:
    from .sol import problem_bytes
    from .timing import MODE_GRAPH, input_sets_for_cold_l2

    if not opts.cold_l2:
        return 1
    if opts.mode == MODE_GRAPH and device_type == "cuda":
        # The flush cannot sit between replayed calls: rotate among enough inputs to exceed L2 instead.
        return input_sets_for_cold_l2(problem_bytes(shape, fmt), l2_bytes)
    return 2


def _too_big_for_cpu(kernel, shape, target, limit_gflop: float | None) -> str | None:
    """Why a case is skipped on the CPU for its size; kernels that cannot run there keep their own reason."""
    if target.device != "cpu" or limit_gflop is None or shape.flops <= limit_gflop * 1e9:
        return None
    if kernel.unavailable_reason(target):
        return None
    return (f"{shape.flops / 1e9:.1f} GFLOP is past the CPU limit of {limit_gflop:g} GFLOP "
            f"(--cpu-max-gflop; a CPU run is a smoke check, time on a GPU)")


def run_case(spec: dict) -> dict:
    """Check, then time, one (kernel, format, shape); returns the case record (see fp4bench.results)."""
    import torch

    from .arch import current_target
    from .formats import gemm_format
    from .harness import recheck_case, verify_case
    from .kernels import get_kernel
    from .problem import Shape, generate
    from .sol import Ceilings, achieved, estimate, math_path_of
    from .timing import MODE_EAGER, MODE_GRAPH, StoppingRule, measure

    started = time.perf_counter()
    fmt = gemm_format(spec["format"])
    shape = Shape(**spec["shape"])
    opts = TimingOptions(**spec["timing"])
    record = {"kernel": spec["kernel"], "role": None, "format": fmt.name, "shape": asdict(shape),
              "gpu": spec.get("gpu_physical"), "status": STATUS_ERROR, "reason": None, "check": None,
              "findings": [], "timing": None, "sol": None, "metrics": None, "notes": []}
    try:
        kernel = get_kernel(spec["kernel"])
        target = current_target(spec["device"], spec.get("gpu", 0))
    except Exception as e:  # unknown kernel, unloadable file, missing GPU: one line in the record
        record["reason"] = one_line(e)
        return _finish(record, started)
    record["kernel"], record["role"] = kernel.name, kernel.role
    math_path = math_path_of(kernel, fmt)
    ceilings = Ceilings.from_dict(spec["ceilings"]) if spec.get("ceilings") else None
    sol = estimate(shape, fmt, math_path, ceilings)
    record["sol"] = sol.to_dict()
    if target.device == "cuda":
        torch.cuda.set_device(target.torch_device)
    too_big = _too_big_for_cpu(kernel, shape, target, opts.cpu_max_gflop)
    if too_big:
        record["status"], record["reason"] = STATUS_SKIP, too_big
        return _finish(record, started)

    seeds = [shape.seed + SEED_STRIDE * i for i in range(spec.get("check_seeds", 2))]
    outcome = verify_case(kernel, shape, fmt, target, seeds)
    record["status"], record["reason"] = outcome.status, outcome.reason
    record["check"] = outcome.check.to_dict() if outcome.check is not None else None
    record["findings"] = list(getattr(outcome, "findings", []))
    if outcome.status != STATUS_PASS:
        return _finish(record, started)

    n_sets = _timing_sets(shape, fmt, opts, spec.get("l2_bytes", 0), target.device)
    try:
        problems = [generate(shape.with_seed(shape.seed + SEED_STRIDE * j), fmt, target.torch_device)
                    for j in range(n_sets)]
        fn = kernel.prepare(problems[0])
        mode = opts.mode
        if mode == MODE_GRAPH and (target.device != "cuda" or not kernel.graph_safe):
            why = "on a CPU" if target.device != "cuda" else f"{kernel.name} does not allow graph capture"
            record["notes"].append(f"graph mode not used ({why}); timed eagerly")
            mode = MODE_EAGER
        rule = StoppingRule(opts.target_rse, opts.budget_s, opts.min_samples, opts.max_samples)
        inputs = [p.data for p in problems]
        try:
            m = measure(fn, inputs, device=target.torch_device, rule=rule, mode=mode, cold_l2=opts.cold_l2,
                        l2_bytes=spec.get("l2_bytes", 0))
        except Exception as e:
            if mode != MODE_GRAPH:
                raise
            # Capture can fail in ways a kernel cannot declare (a host sync deep in a library): fall back.
            record["notes"].append(f"graph capture failed ({one_line(e)}); timed eagerly")
            torch.cuda.synchronize()
            m = measure(fn, inputs, device=target.torch_device, rule=rule, mode=MODE_EAGER,
                        cold_l2=opts.cold_l2, l2_bytes=spec.get("l2_bytes", 0))
        del problems, inputs
    except Exception as e:  # a kernel may break in any way while being timed
        record["status"], record["reason"] = STATUS_ERROR, f"while timing: {one_line(e)}"
        return _finish(record, started)

    fresh_seed = shape.seed + SEED_STRIDE * (max(n_sets, len(seeds)) + 1)
    try:
        recheck = recheck_case(fn, shape, fmt, target, fresh_seed)
    except Exception as e:
        record["status"], record["reason"] = STATUS_ERROR, f"re-check after timing: {one_line(e)}"
        return _finish(record, started)
    if not recheck.passed:
        record["status"] = STATUS_FAIL
        record["reason"] = f"re-check after timing (seed {fresh_seed}): {recheck.reason}"
        return _finish(record, started)

    record["timing"] = m.to_dict(keep_samples=opts.keep_samples)
    record["metrics"] = achieved(sol.flops, sol.bytes, m.stats.median, sol.seconds)
    return _finish(record, started)


def _finish(record: dict, started: float) -> dict:
    record["seconds"] = time.perf_counter() - started
    return record


def gpu_context(device: str, index: int, physical: int | None, measure_ceilings: bool) -> dict:
    """Module-level (worker-callable): this process's device facts and ceilings, as a GpuContext dict."""
    if device != "cuda":
        return asdict(GpuContext())
    from .device import ceilings_for, query_device

    info = query_device(index)
    ceilings = ceilings_for(index, measure_if_missing=measure_ceilings, quick=True)
    return asdict(GpuContext("cuda", index, physical, info.l2_bytes,
                             None if ceilings is None else ceilings.to_dict(), info.to_dict()))


# ---------------------------------------------------------------------------------------------
# executing a plan
# ---------------------------------------------------------------------------------------------
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


def crashed_record(spec: dict, status: str, reason: str | None) -> dict:
    """The record of a case whose worker died or hung: an error, untimed."""
    ref = spec["kernel"]
    # Named as run_case would have named it (a submission file by its stem), so that compare matches it.
    name = os.path.splitext(os.path.basename(ref))[0] if ref.endswith(".py") else ref
    return {"kernel": name, "role": None, "format": spec["format"], "shape": dict(spec["shape"]),
            "gpu": spec.get("gpu_physical"), "status": STATUS_ERROR,
            "reason": f"{'timed out' if status == 'timeout' else 'crashed'}: {reason}", "check": None,
            "findings": [], "timing": None, "sol": None, "metrics": None, "notes": [], "seconds": None}


@dataclass
class Plan:
    """The cases of a run: (kernel, format, shape) triples in report order."""

    cases: list[tuple[str, str, dict]] = field(default_factory=list)


def execute(plan: Plan, executor, contexts: dict, timing: TimingOptions, check_seeds: int,
            on_start: Callable[[int, tuple], None] | None = None,
            on_done: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Run every case of `plan`, spreading them over the executor's lanes; records in plan order."""
    todo: queue.Queue = queue.Queue()
    for i, case in enumerate(plan.cases):
        todo.put((i, case))
    results: dict[int, dict] = {}
    lock = threading.Lock()

    def lane_loop(lane):
        ctx = GpuContext(**contexts[lane])
        while True:
            try:
                i, (kernel, fmt, shape) = todo.get_nowait()
            except queue.Empty:
                return
            spec = case_spec(kernel, fmt, shape, ctx, timing, check_seeds)
            with lock:
                if on_start:
                    on_start(i, (kernel, fmt, shape))
            status, value, reason = executor.call(lane, run_case, spec)
            record = value if status == "ok" else crashed_record(spec, status, reason)
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

