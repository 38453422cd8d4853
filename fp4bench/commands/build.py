"""`fp4bench build` compiles kernels ahead of use; `fp4bench cache` shows and clears the build cache.

A kernel is buildable when it exposes `build_spec()` (a `fp4bench.build.BuildSpec`). Builds need nvcc and
ninja but no GPU: any machine can build for any target. All missing kernels compile in one ninja
invocation (`--jobs` compilers over all their units). Progress is one line per kernel as it starts and as
it finishes (name, target, cached / built / failed, seconds); on a terminal the kernels compiling now are
named on the progress bar (`fp4bench.progress`, the display run and verify use) instead of start lines.
Each failed build's compiler output is printed once, in full, under the kernel's name; the exit code is
then 1.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import click
from tabulate import tabulate

from ..arch import ARCH_BY_CAPABILITY
from ..build import BuildEvent, BuildSpec, build_many, cache_entries, cache_root, clear_cache, default_jobs
from ..errors import EXIT_FAILED, EXIT_OK, InputError
from ..kernels import all_kernels
from ..progress import Progress, fit

KNOWN_TARGETS = frozenset(ARCH_BY_CAPABILITY.values())
NAME_COLS = 20


def buildable_specs() -> list[BuildSpec]:
    # Kernels may share one library (the sm90 CUDA kernels do): each spec once.
    specs = [k.build_spec() for k in all_kernels().values() if callable(getattr(k, "build_spec", None))]
    return list(dict.fromkeys(specs))


def parse_archs(value: str | None) -> set[str] | None:
    if not value:
        return None
    archs = {a.strip() for a in value.split(",") if a.strip()}
    unknown = sorted(archs - KNOWN_TARGETS)
    if unknown:
        raise InputError(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_TARGETS))}")
    return archs


def select_specs(archs: set[str] | None, pattern: str) -> list[BuildSpec]:
    import fnmatch

    names = [p.strip() for p in pattern.split(",") if p.strip()]
    return [s for s in buildable_specs()
            if (archs is None or s.target in archs) and any(fnmatch.fnmatchcase(s.name, p) for p in names)]


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 600 else f"{s / 60:.1f} min"


class BuildLog:
    """Writes `BuildEvent`s as lines a person reads at a glance, through the progress display.

    Every kernel gets an `ok` / `FAILED` line as it finishes, and a summary closes the list. In a log (not a
    terminal) every kernel also gets a `start` line, in the order things happen; on a terminal the kernels
    compiling now are named on the progress bar instead. Every line fits `WIDTH` columns.
    """

    def __init__(self, total: int, stream=None, live: bool | None = None, clock=time.monotonic):
        self.progress = Progress(total, "building", stream=stream or sys.stdout, every_s=None, live=live)
        self.total, self.clock = total, clock
        self.begun = clock()
        self.finished = {"cached": 0, "built": 0, "failed": 0}
        self._lock = threading.Lock()        # ninja's output is read on a thread of its own
        self.progress.__enter__()

    @property
    def done(self) -> int:
        return sum(self.finished.values())

    def line(self, word: str, spec: BuildSpec, rest: str = "") -> str:
        name = fit(spec.name, NAME_COLS)
        text = f"{word:<8}{name:<{NAME_COLS}} {spec.target:<9}{rest}"
        return fit(text.rstrip(), self.progress.columns() - (1 if self.progress.live else 0))

    def __call__(self, event: BuildEvent) -> None:
        with self._lock:
            item = f"{event.spec.name} ({event.spec.target})"
            if event.kind == "start":
                units = len(event.spec.units)
                if not self.progress.live:
                    plural = "s" if units != 1 else ""
                    self.progress.echo(self.line("start", event.spec, f"{units} unit{plural}"))
                self.progress.start(item)
                return
            self.finished[event.kind] += 1
            word = "FAILED" if event.kind == "failed" else "ok"
            seconds = "" if event.kind == "cached" else _seconds(event.seconds)
            self.progress.echo(self.line(word, event.spec,
                                         f"{event.kind:<7}{seconds:>9}   {self.done}/{self.total} done"))
            self.progress.advance(item, event.kind)

    def summary(self) -> str:
        f = self.finished
        kernels = f"{self.total} kernel{'s' if self.total != 1 else ''}"
        return (f"{kernels}: {f['built']} built, {f['cached']} cached, {f['failed']} failed in "
                f"{_seconds(self.clock() - self.begun)}")

    def close(self) -> None:
        with self._lock:
            self.progress.__exit__(None, None, None)
            self.progress.echo(self.summary())


@click.command()
@click.option("--arch", "arch", default=None, metavar="TARGETS",
              help="Comma-separated compile targets, e.g. sm_120a,sm_100a (default: every kernel's own).")
@click.option("--kernels", "pattern", default="*", show_default=True, metavar="PATTERN",
              help="Kernel name or glob pattern, comma-separated.")
@click.option("--jobs", type=click.IntRange(1, 64), default=None,
              help="Parallel compiler processes (default: $FP4BENCH_BUILD_JOBS or 2).")
@click.option("--force", is_flag=True, help="Rebuild even what the cache holds.")
def build(arch, pattern, jobs, force):
    """Compile kernels into the build cache (no GPU needed)."""
    archs = parse_archs(arch)
    specs = select_specs(archs, pattern)
    if not specs:
        raise InputError(f"no buildable kernel matches --kernels {pattern!r}"
                         + (f" for {', '.join(sorted(archs))}" if archs else ""))
    for missing in sorted((archs or set()) - {s.target for s in specs}):
        click.echo(f"note: no buildable kernel targets {missing}", err=True)
    jobs = jobs or default_jobs()
    where = str(cache_root()).replace(str(os.path.expanduser("~")), "~", 1)
    click.echo(f"building {len(specs)} kernel(s) into {where} with {jobs} job(s)", err=True)
    log = BuildLog(len(specs))
    try:
        built, failures = build_many(specs, jobs, force, progress=log)
    finally:
        log.close()
    for err in failures.values():      # the compiler's output, once, under the kernel's name
        click.echo(str(err), err=True)
    sys.exit(EXIT_FAILED if failures else EXIT_OK)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.group(invoke_without_command=True)
@click.pass_context
def cache(ctx):
    """Show the build cache (default), or clear it."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(show)


@cache.command()
def show():
    """List the cached builds."""
    entries = cache_entries()
    click.echo(f"build cache: {cache_root()}")
    if not entries:
        click.echo("empty")
        return
    rows = [[e.name, e.target, "yes" if e.complete else "no (failed or in progress)", _human(e.bytes),
             "-" if e.seconds is None else f"{e.seconds:.0f}", e.path.name] for e in entries]
    click.echo(tabulate(rows, headers=["kernel", "target", "complete", "size", "build s", "entry"]))
    click.echo(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {_human(sum(e.bytes for e in entries))}")


@cache.command()
@click.option("--kernels", "pattern", default=None, metavar="PATTERN", help="Only entries of matching kernels.")
def clear(pattern):
    """Remove cached builds."""
    n = clear_cache(pattern)
    click.echo(f"removed {n} cache entr{'y' if n == 1 else 'ies'} from {cache_root()}")
