"""`fp4bench run`: check, then time, every selected kernel on every shape; tables, JSON, CSV.

The options are one list (`RUN_OPTIONS`) collected into a `RunSettings`; a new option is one entry there
and one field. Exit 0 when every non-skipped case passed, 1 when any failed or errored, 2 on bad input.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import click

from ..errors import EXIT_FAILED, EXIT_OK, InputError
from ..harness import FAILING_STATUSES
from ..kernels import all_kernels
from .common import (check_shapes_fit, check_shapes_legal, device_option, format_option, parse_formats, parse_kernels,
                     parse_shapes, resolve_target, shapes_option)

DEFAULT_BASELINE = "cublas-dense"


@dataclass
class RunSettings:
    shapes_path: str
    groups: tuple[str, ...]
    kernels: tuple[str, ...]
    formats: tuple[str, ...]
    device: str
    gpus: str | None
    baseline: str | None
    json_path: str | None
    csv_path: str | None
    markdown: bool
    isolation: str
    warm_l2: bool
    graph: bool
    rse: float
    budget: float
    min_samples: int
    max_samples: int
    check_seeds: int
    cpu_max_gflop: float
    measure_ceilings: bool
    case_timeout: float
    no_samples: bool
    quiet: bool
    resume: bool = False
    save_baseline: bool = False
    extra: dict = field(default_factory=dict)


RUN_OPTIONS = [
    shapes_option("shapes/task.yml"),
    click.option("--group", "groups", multiple=True, help="Only these groups of the shape file (repeatable)."),
    click.option("--kernels", "--kernel", "kernels", multiple=True,
                 help="Kernel names, glob patterns or submission.py paths; repeatable or comma-separated "
                      "(default: every kernel and baseline)."),
    format_option("nvfp4,mxfp4"),
    device_option(),
    click.option("--gpus", default=None,
                 help="GPUs to spread cases over, one worker process each: 'all' or '0,1,...' (default: GPU 0)."),
    click.option("--baseline", default=None,
                 help=f"Kernel to compute speedups against (default: {DEFAULT_BASELINE}; 'none' for no column)."),
    click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False),
                 help="Write the results document (rewritten after every case)."),
    click.option("--csv", "csv_path", default=None, type=click.Path(dir_okay=False), help="Write a CSV of all cases."),
    click.option("--markdown", is_flag=True, help="Print the tables as markdown."),
    click.option("--isolation", type=click.Choice(["process", "none"]), default="process", show_default=True,
                 help="Run each case in a worker process (a crashing kernel costs one case) or in this one."),
    click.option("--warm-l2", is_flag=True, help="Keep L2 warm between timed calls (default: flush it)."),
    click.option("--graph", is_flag=True,
                 help="Replay calls from a CUDA graph (no launch overhead) for kernels that allow capture."),
    click.option("--rse", type=click.FloatRange(1e-5, 1.0), default=0.005, show_default=True,
                 help="Stop sampling once the relative standard error of the mean is under this."),
    click.option("--budget", type=click.FloatRange(0.001, 3600), default=2.0, show_default=True,
                 help="Time budget per case for sampling, in seconds."),
    click.option("--min-samples", type=click.IntRange(2, None), default=10, show_default=True),
    click.option("--max-samples", type=click.IntRange(2, None), default=10_000, show_default=True),
    click.option("--seeds", "check_seeds", type=click.IntRange(1, 100), default=2, show_default=True,
                 help="Random inputs checked per case before timing."),
    click.option("--cpu-max-gflop", type=click.FloatRange(0, None, min_open=True), default=2.0, show_default=True,
                 help="On the CPU, skip (with the reason) cases of more GFLOP than this."),
    click.option("--measure-ceilings/--no-measure-ceilings", default=True, show_default=True,
                 help="Measure the GPU's ceilings (for % of SOL) when none are cached."),
    click.option("--case-timeout", type=click.FloatRange(1, None), default=600.0, show_default=True,
                 help="Seconds a case may take in its worker before it is killed."),
    click.option("--no-samples", is_flag=True, help="Leave the raw samples out of the JSON."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    click.option("--resume", is_flag=True,
                 help="Keep the cases already in the --json file and run only the others (after an interruption)."),
    click.option("--save-baseline", is_flag=True,
                 help="Also store the results as baselines/<gpu>.json, the reference of `fp4bench compare`."),
]


def with_options(options):
    def decorate(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return decorate


def parse_gpus(value: str | None, device_type: str) -> list[int | None]:
    """Lanes for the executor: GPU indices (as this process sees them), or [None] on the CPU."""
    if device_type != "cuda":
        if value is not None:
            raise InputError("--gpus needs --device cuda (or auto on a machine with a GPU)")
        return [None]
    from ..device import NoDeviceError, query_devices

    try:
        count = len(query_devices())
    except NoDeviceError as e:
        raise InputError(str(e)) from None
    if value is None:
        return [0]
    if value.strip().lower() == "all":
        return list(range(count))
    try:
        ids = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--gpus: expected 'all' or a comma-separated list of indices, got {value!r}") from None
    bad = [i for i in ids if not 0 <= i < count]
    if bad or not ids:
        raise InputError(f"--gpus: no GPU {', '.join(map(str, bad)) if bad else repr(value)}; "
                         f"this machine has {count}")
    return sorted(set(ids))


def _resolve_baseline(settings: RunSettings, selected: list) -> str | None:
    if settings.baseline and settings.baseline.lower() == "none":
        return None
    name = settings.baseline or DEFAULT_BASELINE
    if any(k.name == name for k in selected):
        return name
    if settings.baseline is None:
        return None   # the default baseline is not part of this run: no speedup column
    kernels = all_kernels()
    if name not in kernels:
        raise InputError(f"--baseline: unknown kernel {name!r}; known: {', '.join(sorted(kernels))}")
    selected.append(kernels[name])
    return name


def build_plan(settings: RunSettings):
    """Settings -> (plan, formats, shapes, kernels, baseline); every bad input is an InputError."""
    from ..runner import Plan

    fmts = parse_formats(settings.formats)
    shapes = parse_shapes(settings.shapes_path, settings.groups or None)
    check_shapes_legal(shapes, fmts, settings.shapes_path)
    selected = parse_kernels(settings.kernels) if settings.kernels else list(all_kernels().values())
    baseline = _resolve_baseline(settings, selected)
    plan = Plan()
    for fmt in fmts:
        for kernel in selected:
            if fmt.name not in kernel.formats:
                continue
            ref = str(getattr(kernel, "path", None) or kernel.name)
            for shape in shapes:
                plan.cases.append((ref, fmt.name, {"m": shape.m, "n": shape.n, "k": shape.k, "l": shape.l,
                                                   "seed": shape.seed}))
    if not plan.cases:
        raise InputError("no selected kernel supports the selected format(s)")
    return plan, fmts, shapes, selected, baseline


def _make_executor(settings: RunSettings, lanes: list[int | None]):
    from ..runner import InProcessExecutor, WorkerExecutor

    if settings.isolation == "none":
        if len(lanes) > 1:
            raise InputError("--gpus with several GPUs needs --isolation process (one process per GPU)")
        return InProcessExecutor(lanes)
    try:
        return WorkerExecutor(lanes, settings.case_timeout)
    except ImportError as e:
        click.echo(f"warning: worker processes unavailable ({e}); running cases in this process", err=True)
        if len(lanes) > 1:
            raise InputError("--gpus with several GPUs needs worker processes (fp4bench.isolation)") from None
        return InProcessExecutor(lanes)


def _contexts(executor, lanes, device_type: str, settings: RunSettings) -> dict:
    from ..runner import gpu_context

    contexts = {}
    for lane in lanes:
        in_proc_index = 0 if (lane is None or settings.isolation == "process") else lane
        status, value, reason = executor.call(lane, gpu_context, device_type, in_proc_index,
                                              lane, settings.measure_ceilings)
        if status != "ok":
            raise click.ClickException(f"GPU {lane}: could not read the device or its ceilings: {reason}")
        contexts[lane] = value
    return contexts


def _clocks(lanes) -> dict:
    from ..device import current_clocks

    return {str(lane): current_clocks(lane) for lane in lanes if lane is not None}


def execute_run(settings: RunSettings) -> int:
    from ..report import ProgressBar, render_csv, render_tables
    from ..results import ResultsWriter, atomic_write_text, environment_fingerprint
    from ..runner import TimingOptions, execute

    plan, fmts, shapes, selected, baseline = build_plan(settings)
    target = resolve_target(settings.device)
    check_shapes_fit(shapes, fmts, target)
    lanes = parse_gpus(settings.gpus, target.device)
    previous = _resume(settings, plan)
    timing = TimingOptions(mode="graph" if settings.graph else "eager", cold_l2=not settings.warm_l2,
                           target_rse=settings.rse, budget_s=settings.budget, min_samples=settings.min_samples,
                           max_samples=max(settings.max_samples, settings.min_samples),
                           keep_samples=not settings.no_samples,
                           cpu_max_gflop=settings.cpu_max_gflop if target.device == "cpu" else None)
    where = target.describe() if len(lanes) == 1 else f"{len(lanes)} GPUs ({', '.join(map(str, lanes))})"
    click.echo(f"fp4bench run on {where}: {len(selected)} kernel(s), {len(shapes)} shape(s), "
               f"{len(fmts)} format(s), {len(plan.cases)} case(s)", err=True)

    executor = _make_executor(settings, lanes)
    try:
        contexts = _contexts(executor, lanes, target.device, settings)
        env = environment_fingerprint([c["info"] for c in contexts.values() if c.get("info")], _clocks(lanes))
        run_settings = {"shapes": settings.shapes_path, "groups": list(settings.groups),
                        "formats": [f.name for f in fmts], "kernels": [k.name for k in selected],
                        "baseline": baseline, "device": target.device, "gpus": lanes, "isolation": settings.isolation,
                        "timing": timing.to_dict(), "check_seeds": settings.check_seeds,
                        "ceilings": {str(lane): c.get("ceilings") for lane, c in contexts.items()}}
        writer = ResultsWriter(settings.json_path, env, run_settings) if settings.json_path else None
        if writer:
            writer.cases = list(previous)
        bar = ProgressBar(len(plan.cases), enabled=not settings.quiet)

        def on_start(i, case):
            kernel, fmt, shape = case
            bar.start(f"{Path(kernel).name} {fmt} {shape['m']}x{shape['n']}x{shape['k']} ...")

        def on_done(i, record):
            bar.advance(f"{record['kernel']} {record['format']} {record['shape']['m']}x{record['shape']['n']}x"
                        f"{record['shape']['k']} {record['status']}")
            if writer:
                writer.add(record)

        cases = previous + execute(plan, executor, contexts, timing, settings.check_seeds, on_start, on_done)
        bar.close()
    finally:
        executor.close()

    env["clocks"]["end"] = _clocks(lanes)
    if writer:
        writer.cases = cases   # plan order, not completion order
        writer.environment = env
        writer.flush()
    if settings.save_baseline:
        from ..compare import save_baseline
        from ..results import make_document

        click.echo(f"baseline saved as {save_baseline(make_document(env, run_settings, cases))}", err=True)
    note = "CPU times from a host clock, not comparable with GPU times" if target.device == "cpu" else None
    click.echo(render_tables(cases, baseline, markdown=settings.markdown, clock_note=note))
    if settings.csv_path:
        atomic_write_text(settings.csv_path, render_csv(cases, baseline))
    counts = {s: sum(c["status"] == s for c in cases) for s in ("pass", "fail", "error", "skip")}
    click.echo(f"\n{counts['pass']} passed, {counts['fail']} failed, {counts['error']} errors, "
               f"{counts['skip']} skipped" + (f"; results in {settings.json_path}" if writer else ""))
    return EXIT_FAILED if any(c["status"] in FAILING_STATUSES for c in cases) else EXIT_OK


def _case_key(kernel_ref: str, fmt: str, shape: dict) -> tuple:
    # Records name a submission file by its stem (ExternalKernel's name); plans by its path.
    name = Path(kernel_ref).stem if kernel_ref.endswith(".py") else kernel_ref
    return name, fmt, tuple(int(shape.get(k, 1)) for k in ("m", "n", "k", "l", "seed"))


def _resume(settings: RunSettings, plan) -> list[dict]:
    """With --resume: the cases already in the --json file (kept), and the plan cut to the others."""
    if not settings.resume:
        return []
    if not settings.json_path:
        raise InputError("--resume needs --json FILE (the results of the interrupted run)")
    if not Path(settings.json_path).exists():
        return []
    from ..results import ResultsFileError, load_results

    try:
        previous = load_results(settings.json_path)["cases"]
    except ResultsFileError as e:
        raise InputError(f"--resume: {e}") from None
    try:
        done = {_case_key(c["kernel"], c["format"], c["shape"]) for c in previous}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InputError(f"--resume: {settings.json_path} holds a malformed case") from None
    plan.cases = [c for c in plan.cases if _case_key(*c) not in done]
    click.echo(f"resuming: {len(previous)} case(s) already in {settings.json_path}, "
               f"{len(plan.cases)} to run", err=True)
    return previous


@click.command()
@with_options(RUN_OPTIONS)
def run(**kwargs):
    """Check and time kernels and baselines on a shape set; one table per format."""
    settings = RunSettings(**kwargs)
    sys.exit(execute_run(settings))
