"""`fp4bench build` compiles kernels ahead of use; `fp4bench cache` shows and clears the build cache.

A kernel is buildable when it exposes `build_spec()` (a `fp4bench.build.BuildSpec`). Builds need nvcc and
ninja but no GPU: any machine can build for any target. Each failed build's compiler output is printed
once, in full, under the kernel's name; the exit code is then 1.
"""

from __future__ import annotations

import sys
import click
from tabulate import tabulate

from ..arch import ARCH_BY_CAPABILITY
from ..build import BuildSpec, build_many, cache_entries, cache_root, clear_cache, default_jobs
from ..errors import EXIT_FAILED, EXIT_OK, InputError
from ..kernels import all_kernels

KNOWN_TARGETS = frozenset(ARCH_BY_CAPABILITY.values())


def buildable_specs() -> list[BuildSpec]:
    return [k.build_spec() for k in all_kernels().values() if callable(getattr(k, "build_spec", None))]


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
    click.echo(f"building {len(specs)} kernel(s) into {cache_root()} with {jobs} job(s)", err=True)
    with click.progressbar(length=len(specs), label="building", file=sys.stderr,
                           item_show_func=lambda s: s) as bar:
        built, failures = build_many(specs, jobs, force,
                                     on_done=lambda spec: bar.update(1, f"{spec.name} ({spec.target})"))
    for spec, path in sorted(built.items(), key=lambda x: x[0].name):
        click.echo(f"ok      {spec.name:<20} {spec.target:<8} {path}")
    for spec, err in failures.items():
        click.echo(f"FAILED  {spec.name:<20} {spec.target}", err=True)
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
