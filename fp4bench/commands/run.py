"""`fp4bench run` and `fp4bench verify`: one driver over the case pipeline (fp4bench.pipeline).

`run` checks, then times every selected kernel on every shape; `verify` is the same run without timing
(a check-only spec per case), so it has the same worker isolation, `--case-timeout`, multi-GPU lanes,
progress, JSON results and exit codes. Every option is declared once, as a field of `RunSettings` with its
default and help (timing defaults come from `fp4bench.timing.TimingOptions`); both commands are generated
from those fields. `--problem` picks the competition problem (fp4bench.problem kinds), and with it the default
shape set and format. `verify --sanitize TOOL` adds, after each checked case, one pass per tool under NVIDIA
compute-sanitizer (fp4bench.sanitize). Exit codes (fp4bench.errors): 0 every checked case passed, 1 a case
failed or errored, 2 bad input (a --sanitize without compute-sanitizer or without a GPU included), 3 nothing
was checked (every case skipped), 4 a submission file cannot be imported on this machine (its cases are
skipped with the reason).
"""

from __future__ import annotations

import sys
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

import click

from ..case import CaseCounts, CaseRecord, CaseSpec, kernel_label
from ..errors import EXIT_FAILED, EXIT_NOTHING_CHECKED, EXIT_OK, EXIT_UNAVAILABLE, InputError
from ..formats import GEMM_FORMATS
from ..kernels import all_kernels
from ..problem import GEMM, KIND_SPECS, kind_spec, problem_kind, unsupported_format
from ..sanitize import DEFAULT_TOOL as SANITIZE_DEFAULT, TOOLS as SANITIZE_TOOLS
from ..timing import MODE_EAGER, MODE_GRAPH, TIMERS, TimingOptions
from .common import (
    check_shapes_fit,
    check_shapes_legal,
    parse_formats,
    parse_kernels,
    parse_shapes,
    resolve_target,
)

DEFAULT_BASELINE = "cublas-dense"
DEFAULT_PROBLEM = "nvfp4_gemm"
# Shape sets and formats when none are given: per command for the GEMM, the problem's own set and its one
# format for the competition's other problems.
DEFAULT_SHAPES = {"run": "shapes/task.yml", "verify": "shapes/verify.yml"}
DEFAULT_FORMATS = {"run": ("nvfp4,mxfp4",), "verify": ("nvfp4",)}
# Kernels that compute the reference itself (a check of them checks the harness, not a kernel).
REFERENCE_KERNELS = {"torch-ref"}
PROGRESS_LABELS = {"run": "running", "verify": "verifying", "tune": "tuning"}
# Tuning times every candidate of every case: a shorter budget per measurement keeps a sweep affordable.
TUNE_BUDGET_S = 0.5
_TIMING = TimingOptions()   # the timing defaults, declared once in fp4bench.timing


def _option(*decls, default=None, **click_kwargs):
    """A settings field that is also a click option (declarations, help, type...)."""
    return field(default=default, metadata={"decls": decls, "click": click_kwargs})


@dataclass
class RunSettings:
    problem: str = _option("--problem", default=DEFAULT_PROBLEM, show_default=True,
                           help="Competition problem: " + ", ".join(s.competition for s in KIND_SPECS.values()) +
                                " (the last three in format nvfp4 only).")
    shapes_path: str | None = _option("--shapes",
                                      help="YAML shape set (a path, or the name of a bundled set in shapes/); "
                                           "default: task.yml (run) or verify.yml (verify) for nvfp4_gemm, the "
                                           "problem's own set (e.g. nvfp4_gemv.yml) for the others.")
    groups: tuple = _option("--group", default=(), multiple=True,
                            help="Only these groups of the shape file (repeatable).")
    kernels: tuple = _option("--kernels", "--kernel", default=(), multiple=True,
                             help="Kernel names, glob patterns or submission.py paths; repeatable or "
                                  "comma-separated (default: every kernel and baseline).")
    formats: tuple = _option("--format", default=(), multiple=True,
                             help=f"GEMM format, repeatable or comma-separated: {', '.join(GEMM_FORMATS)} or all "
                                  f"(default: nvfp4,mxfp4 for run, nvfp4 for verify and the other problems).")
    device: str = _option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
                          help="Where to run: cuda, cpu, or auto (cuda when present).")
    gpus: str | None = _option("--gpus", help="GPUs to spread cases over, one worker process each: 'all' or "
                                              "'0,1,...' (default: GPU 0).")
    seed: int | None = _option("--seed", type=int, help="Base seed for every shape (default: each shape's own).")
    check_seeds: int = _option("--seeds", default=2, show_default=True, type=click.IntRange(1, 100),
                               help="Random inputs checked per case.")
    baseline: str | None = _option("--baseline", help=f"Kernel to compute speedups against (default: "
                                                      f"{DEFAULT_BASELINE}; 'none' for no column).")
    json_path: str | None = _option("--json", type=click.Path(dir_okay=False),
                                    help="Write the results document (rewritten after every case).")
    csv_path: str | None = _option("--csv", type=click.Path(dir_okay=False), help="Write a CSV of all cases.")
    markdown: bool = _option("--markdown", default=False, is_flag=True, help="Print the tables as markdown.")
    wide: bool = _option("--wide", default=False, is_flag=True,
                         help="Every case in the tables with its full reason (default: fit 100 columns).")
    isolation: str = _option("--isolation", default="process", show_default=True,
                             type=click.Choice(["process", "none"]),
                             help="Run each case in a worker process (a crashing kernel costs one case) or here.")
    case_timeout: float = _option("--case-timeout", default=600.0, show_default=True,
                                  type=click.FloatRange(1, None),
                                  help="Seconds a case may take in its worker before it is killed.")
    warm_l2: bool = _option("--warm-l2", default=not _TIMING.cold_l2, is_flag=True,
                            help="Keep L2 warm between timed calls (default: flush it).")
    graph: bool = _option("--graph", default=_TIMING.mode == MODE_GRAPH, is_flag=True,
                          help="Replay calls from a CUDA graph (no launch overhead) for kernels that allow it.")
    timer: str = _option("--timer", default=_TIMING.timer, show_default=True, type=click.Choice(TIMERS),
                         help="Timing back-end: fp4bench's own, or NVIDIA nvbench (package cuda-bench).")
    rse: float = _option("--rse", default=_TIMING.target_rse, show_default=True, type=click.FloatRange(1e-5, 1.0),
                         help="Stop sampling once the relative standard error of the mean is under this.")
    budget: float = _option("--budget", default=_TIMING.budget_s, show_default=True,
                            type=click.FloatRange(0.001, 3600), help="Time budget per case for sampling, in seconds.")
    min_samples: int = _option("--min-samples", default=_TIMING.min_samples, show_default=True,
                               type=click.IntRange(2, None))
    max_samples: int = _option("--max-samples", default=_TIMING.max_samples, show_default=True,
                               type=click.IntRange(2, None))
    cpu_max_gflop: float = _option("--cpu-max-gflop", default=2.0, show_default=True,
                                   type=click.FloatRange(0, None, min_open=True),
                                   help="On the CPU, skip (with the reason) cases of more GFLOP than this.")
    tune: bool = _option("--tune", default=False, is_flag=True,
                         help="Time each kernel's candidate configurations first and store the fastest in the "
                              "GPU model's tuned table (fp4bench/tuned/).")
    measure_ceilings: bool = _option("--measure-ceilings/--no-measure-ceilings", default=True, show_default=True,
                                     help="Measure the GPU's ceilings (for % of SOL) when none are cached.")
    no_samples: bool = _option("--no-samples", default=False, is_flag=True,
                               help="Leave the raw samples out of the JSON.")
    quiet: bool = _option("--quiet", "-q", default=False, is_flag=True, help="No progress display.")
    resume: bool = _option("--resume", default=False, is_flag=True,
                           help="Keep the cases already in the --json file and run only the others.")
    shard: str | None = _option("--shard", help="Run only shard I of N ('I/N', 1-based): a deterministic, "
                                                "cost-balanced part of the cases; `fp4bench merge` joins the shards.")
    save_baseline: bool = _option("--save-baseline", default=False, is_flag=True,
                                  help="Also store the results as baselines/<gpu>.json (see `fp4bench compare`).")
    sanitize: tuple = _option("--sanitize", default=(), multiple=True, is_flag=False, flag_value=SANITIZE_DEFAULT,
                              metavar=f"[{'|'.join(SANITIZE_TOOLS)}]",
                              help=f"Also run each checked case under NVIDIA compute-sanitizer with this tool "
                                   f"(repeatable; {SANITIZE_DEFAULT} when no tool is named); a finding fails "
                                   f"the case.")
    strict_submission: bool = _option("--strict-submission/--no-strict-submission", default=True,
                                      show_default=True,
                                      help="A submission file may not import or call the reference, "
                                           "torch._scaled_mm or dense torch matmuls doing the GEMM (traced).")
    check_only: bool = False   # verify: no timing (not an option; the command decides)


# Options of verify alone: the sanitized passes check, they do not time.
VERIFY_OPTIONS = ("sanitize",)
# Options that only make sense when timing.
TIMING_OPTIONS = ("shard", "baseline", "csv_path", "markdown", "warm_l2", "graph", "timer", "rse", "budget", "min_samples",
                  "max_samples", "cpu_max_gflop", "tune", "measure_ceilings", "no_samples", "save_baseline")


def settings_options(exclude=(), defaults: dict | None = None):
    """Click options generated from RunSettings' fields (minus `exclude`, with other `defaults`)."""
    def decorate(f):
        for fld in reversed(fields(RunSettings)):
            if "decls" not in fld.metadata or fld.name in exclude:
                continue
            default = (defaults or {}).get(fld.name, fld.default)
            f = click.option(*fld.metadata["decls"], fld.name,
                             default=None if default is MISSING else default, **fld.metadata["click"])(f)
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
    if settings.check_only or (settings.baseline and settings.baseline.lower() == "none"):
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


def timing_options(settings: RunSettings, device_type: str) -> TimingOptions | None:
    if settings.check_only:
        return None
    return TimingOptions(mode=MODE_GRAPH if settings.graph else MODE_EAGER, cold_l2=not settings.warm_l2,
                         target_rse=settings.rse, budget_s=settings.budget, min_samples=settings.min_samples,
                         max_samples=max(settings.max_samples, settings.min_samples),
                         keep_samples=not settings.no_samples, timer=settings.timer,
                         cpu_max_gflop=settings.cpu_max_gflop if device_type == "cpu" else None)


def resolve_problem(settings: RunSettings) -> RunSettings:
    """The settings with the problem's kind checked and the shape set and formats that were not given filled in
    ('all' formats of a competition-only problem are its one format)."""
    try:
        kind = problem_kind(settings.problem or DEFAULT_PROBLEM)
    except KeyError as e:
        raise InputError(f"--problem: {e.args[0]}") from None
    command = "verify" if settings.check_only else "run"
    own_formats = KIND_SPECS[kind].formats
    shapes = settings.shapes_path or (DEFAULT_SHAPES[command] if kind == GEMM
                                      else f"shapes/{KIND_SPECS[kind].competition}.yml")
    formats = settings.formats or (DEFAULT_FORMATS[command] if kind == GEMM else own_formats)
    if own_formats is not None and tuple(formats) == ("all",):
        formats = own_formats
    return replace(settings, problem=kind, shapes_path=shapes, formats=tuple(formats))


def build_plan(settings: RunSettings, timing: TimingOptions | None):
    """Settings -> (plan, formats, shapes, kernels, baseline); every bad input is an InputError.

    `settings` have been through `resolve_problem`: `problem` is a kind."""
    from ..runner import Plan

    kind = settings.problem
    fmts = parse_formats(settings.formats)
    for fmt in fmts:
        reason = unsupported_format(kind, fmt)
        if reason:
            raise InputError(f"--problem {KIND_SPECS[kind].competition} --format {fmt.name}: {reason}")
    shapes = parse_shapes(settings.shapes_path, settings.groups or None, kind)
    if settings.seed is not None:
        shapes = [s.with_seed(settings.seed) for s in shapes]
    check_shapes_legal(shapes, fmts, settings.shapes_path, kind)
    if settings.kernels:
        # A pattern may match kernels of other problems (sm90-* for the GEMV): those are left out.
        selected = [k for k in parse_kernels(settings.kernels, problem=kind) if kind in k.problems]
    elif settings.tune:
        selected = [k for k in all_kernels().values() if k.tunable and kind in k.problems]
    else:
        role = "kernel" if settings.check_only else None
        selected = [k for k in all_kernels().values() if (role is None or k.role == role) and kind in k.problems]
    baseline = _resolve_baseline(settings, selected)
    cases = []
    for fmt in fmts:
        for kernel in selected:
            if fmt.name not in kernel.formats or kind not in kernel.problems:
                continue
            ref = str(getattr(kernel, "path", None) or kernel.name)
            cases += [CaseSpec(ref, fmt.name, shape, problem=kind, timing=timing, check_seeds=settings.check_seeds,
                               tune=settings.tune, strict_submission=settings.strict_submission)
                      for shape in shapes]
    if not cases:
        raise InputError(f"no selected kernel computes {KIND_SPECS[kind].competition} in the selected format(s)")
    return Plan(cases), fmts, shapes, selected, baseline


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """'I/N' -> (I, N) with 1 <= I <= N; None for no sharding."""
    if value is None:
        return None
    try:
        index, count = (int(x) for x in value.split("/"))
    except ValueError:
        raise InputError(f"--shard: expected I/N such as 2/8, got {value!r}") from None
    if not 1 <= index <= count:
        raise InputError(f"--shard {value}: I must be between 1 and N")
    return index, count


def _case_cost(spec: CaseSpec) -> float:
    """Relative cost of a case for balancing shards: a fixed part (checks, warm-up, sampling budget) plus
    work that grows with the GEMM's size (the reference and the kernel's own time)."""
    return 1.0 + kind_spec(spec.problem).flops(spec.shape) / 50e9


def shard_positions(cases: list[CaseSpec], index: int, count: int) -> list[int]:
    """Plan positions of shard `index` of `count`: longest-cost-first onto the least-loaded shard, ties to the
    earlier position and the lower shard. Deterministic: every shard computes the same split."""
    load = [0.0] * count
    owner = {}
    for pos in sorted(range(len(cases)), key=lambda p: (-_case_cost(cases[p]), p)):
        target = min(range(count), key=lambda s: (load[s], s))
        load[target] += _case_cost(cases[pos])
        owner[pos] = target
    return [pos for pos in range(len(cases)) if owner[pos] == index - 1]


def _make_executor(settings: RunSettings, lanes: list[int | None]):
    from ..runner import InProcessExecutor, WorkerExecutor

    if settings.isolation == "none":
        if len(lanes) > 1:
            raise InputError("--gpus with several GPUs needs --isolation process (one process per GPU)")
        return InProcessExecutor(lanes)
    return WorkerExecutor(lanes, settings.case_timeout)


def _contexts(executor, lanes, device_type: str, settings: RunSettings) -> dict:
    from ..runner import gpu_context

    measure = settings.measure_ceilings and not settings.check_only
    contexts = {}
    for lane in lanes:
        in_proc_index = 0 if (lane is None or settings.isolation == "process") else lane
        status, value, reason = executor.call(lane, gpu_context, device_type, in_proc_index, lane, measure)
        if status != "ok":
            raise click.ClickException(f"GPU {lane}: could not read the device or its ceilings: {reason}")
        contexts[lane] = value
    return contexts


def _clocks(lanes) -> dict:
    from ..device import current_clocks

    return {str(lane): current_clocks(lane) for lane in lanes if lane is not None}


def _progress_label(spec: CaseSpec) -> str:
    return f"{kernel_label(spec.kernel)} {spec.format} {spec.shape}"


def execute_run(settings: RunSettings) -> int:
    from ..progress import Progress
    from ..report import render_checks, render_csv, render_tables
    from ..results import ResultsWriter, atomic_write_text, environment_fingerprint
    from ..runner import execute

    settings = resolve_problem(settings)
    target = resolve_target(settings.device)
    sanitizer = _sanitizer(settings, target)
    timing = timing_options(settings, target.device)
    plan, fmts, shapes, selected, baseline = build_plan(settings, timing)
    shard = parse_shard(settings.shard)
    positions = list(range(len(plan.cases)))
    if shard is not None:
        positions = shard_positions(plan.cases, *shard)
        plan.cases = [plan.cases[p] for p in positions]
    sharded = list(plan.cases)
    check_shapes_fit(shapes, fmts, target, kind=settings.problem)
    lanes = parse_gpus(settings.gpus, target.device)
    previous = _resume(settings, plan)
    where = target.describe() if len(lanes) == 1 else f"{len(lanes)} GPUs ({', '.join(map(str, lanes))})"
    verb = "verify" if settings.check_only else "tune" if settings.tune else "run"
    click.echo(f"fp4bench {verb} on {where}: {len(selected)} kernel(s), {len(shapes)} shape(s), "
               f"{len(fmts)} format(s), {len(plan.cases)} case(s)", err=True)

    executor = _make_executor(settings, lanes)
    writer = None
    try:
        contexts = _contexts(executor, lanes, target.device, settings)
        env = environment_fingerprint([c["info"] for c in contexts.values() if c.get("info")], _clocks(lanes))
        run_settings = {"command": verb, "problem": settings.problem, "shapes": settings.shapes_path,
                        "groups": list(settings.groups),
                        "formats": [f.name for f in fmts], "kernels": [k.name for k in selected],
                        "baseline": baseline, "device": target.device, "gpus": lanes, "isolation": settings.isolation,
                        "timing": None if timing is None else timing.to_dict(), "check_seeds": settings.check_seeds,
                        "sanitize": list(sanitizer.tools) if sanitizer else None,
                        "ceilings": {str(lane): c.get("ceilings") for lane, c in contexts.items()},
                        # Where each case stands in the unsharded plan, so that `merge` restores its order.
                        "shard": None if shard is None else {
                            "index": shard[0], "count": shard[1],
                            "positions": [[pos, list(spec.key)] for pos, spec in zip(positions, sharded)]}}
        writer = ResultsWriter(settings.json_path, env, run_settings) if settings.json_path else None
        if writer:
            writer.cases = list(previous)
        with Progress(len(plan.cases), PROGRESS_LABELS[verb], enabled=not settings.quiet) as progress:
            def on_start(i, spec):
                progress.start(_progress_label(spec))

            def on_done(i, record):
                progress.advance(_progress_label(record), f"{record.status}")
                if writer:
                    writer.add(record)

            cases = previous + execute(plan, executor, contexts, on_start, on_done,
                                       sanitizer.finish if sanitizer else None)
    except KeyboardInterrupt:
        saved = f"; the {len(writer.cases)} finished case(s) are saved in {settings.json_path} (--resume " \
                f"continues)" if writer else ""
        click.echo(f"\ninterrupted{saved}", err=True)
        raise SystemExit(130) from None
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
    if settings.check_only:
        click.echo(render_checks(cases, wide=settings.wide))
    else:
        click.echo(render_tables(cases, baseline, markdown=settings.markdown, wide=settings.wide))
        if settings.csv_path:
            atomic_write_text(settings.csv_path, render_csv(cases, baseline))
    if sanitizer:
        from ..report import WIDTH, _wrapped

        click.echo("\n" + _wrapped(sanitizer.summary(), WIDTH, indent=""))
    counts = CaseCounts.of(cases)
    click.echo(f"\n{counts.summary()}" + (f"; results in {settings.json_path}" if writer else ""))
    checked = {c.kernel for c in cases if c.status != "skip"}
    if target.device == "cpu" and checked and checked <= REFERENCE_KERNELS and settings.problem == GEMM:
        click.echo(f"only the reference ({', '.join(sorted(checked))}) ran: the other kernels need a GPU.\n"
                   f"The portable Triton kernel runs on a CPU under Triton's interpreter:\n"
                   f"  TRITON_INTERPRET=1 fp4bench verify --kernel triton-fp4 --shapes smoke", err=True)
    if counts.failing:
        return EXIT_FAILED
    unloadable = [k for k in selected if getattr(k, "import_failure", None)]
    if unloadable:
        for k in unloadable:
            click.echo(f"{k.name}: cannot run on this machine: {k.import_failure}", err=True)
        return EXIT_UNAVAILABLE
    if counts.checked == 0:
        click.echo("nothing was checked: every case was skipped (see the reasons above)", err=True)
        return EXIT_NOTHING_CHECKED
    return EXIT_OK


def _sanitizer(settings: RunSettings, target):
    """The sanitized passes of verify --sanitize (None without it); no tool, no sanitizer or no GPU is an
    InputError."""
    if not settings.sanitize:
        return None
    from ..sanitize import Sanitizer, SanitizerMissing, find_sanitizer, log_dir_for, parse_tools

    try:
        tools = parse_tools(settings.sanitize)
    except ValueError as e:
        raise InputError(str(e)) from None
    try:
        executable = find_sanitizer()
    except SanitizerMissing as e:
        raise InputError(str(e)) from None
    if target.device != "cuda":
        why = "--device cpu was asked for" if settings.device == "cpu" else "this machine has no CUDA GPU"
        raise InputError(f"--sanitize checks GPU kernels under compute-sanitizer and needs a CUDA GPU; {why}")
    return Sanitizer(tools, executable, log_dir_for(settings.json_path), settings.case_timeout)


def _resume(settings: RunSettings, plan) -> list[CaseRecord]:
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
    done = {c.key for c in previous}
    plan.cases = [c for c in plan.cases if c.key not in done]
    click.echo(f"resuming: {len(previous)} case(s) already in {settings.json_path}, "
               f"{len(plan.cases)} to run", err=True)
    return previous


@click.command()
@settings_options(exclude=VERIFY_OPTIONS)
def run(**kwargs):
    """Check and time kernels and baselines on a shape set; one table per format."""
    sys.exit(execute_run(RunSettings(**kwargs)))


@click.command()
@settings_options(exclude=TIMING_OPTIONS)
def verify(**kwargs):
    """Check kernels against the exact reference on a shape set (no timing); default: every kernel."""
    sys.exit(execute_run(replace(RunSettings(**kwargs), check_only=True)))


@click.command()
@settings_options(exclude=("tune", "baseline", "save_baseline", "timer", "graph", "check_only") + VERIFY_OPTIONS,
                  defaults={"budget": TUNE_BUDGET_S, "formats": ("all",)})
def tune(**kwargs):
    """Time each kernel's candidate launch configurations on a shape set and store the fastest in the GPU
    model's tuned table (fp4bench/tuned/<gpu>.json), which run and verify then use. Default: every kernel with
    launch choices. The incumbent stays unless a challenger is faster beyond both measurements' noise."""
    sys.exit(execute_run(replace(RunSettings(**kwargs), tune=True, baseline="none")))
