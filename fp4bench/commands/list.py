"""`fp4bench list`: every registered kernel with its role, problem kinds, formats, targets, and whether it can
run here.

"runs here" is answered for the chosen device (default: the GPU when there is one, else the CPU) through
each kernel's `unavailable_reason`; buildable kernels also show whether the build cache holds them.
Kernel modules that failed to import are listed with their error, so a missing dependency is visible.
"""

from __future__ import annotations

import click
from tabulate import tabulate

from ..kernels import all_kernels, import_errors
from ..problem import PROBLEM_KINDS
from .common import device_option, resolve_target

TABLE_WIDTH = 100
KINDS_WIDTH = 10
FORMATS_WIDTH = 16
TARGETS_WIDTH = 8
REASON_WIDTH = 18
MIN_REASON_WIDTH = 12


def _built(kernel) -> str:
    spec_fn = getattr(kernel, "build_spec", None)
    if not callable(spec_fn):
        return "-"
    from ..build import cached_product

    try:
        return "yes" if cached_product(spec_fn()) is not None else "no"
    except Exception as e:  # a broken toolchain must not hide the list
        return f"? ({type(e).__name__})"


def _kinds(kernel) -> str:
    """The problem kinds a kernel computes ('all' when every one)."""
    return "all" if set(kernel.problems) >= set(PROBLEM_KINDS) else ", ".join(kernel.problems)


def _fitted_table(rows: list[list[str]], headers: list[str]) -> str:
    """The table with the last column narrowed until every line fits TABLE_WIDTH (or it reaches its minimum)."""
    reason_width = REASON_WIDTH
    while True:
        table = tabulate(rows, headers=headers,
                         maxcolwidths=[None, None, KINDS_WIDTH, FORMATS_WIDTH, TARGETS_WIDTH, None, reason_width])
        over = max(map(len, table.splitlines())) - TABLE_WIDTH
        if over <= 0 or reason_width == MIN_REASON_WIDTH:
            return table
        reason_width = max(MIN_REASON_WIDTH, reason_width - over)


@click.command("list")
@device_option()
@click.option("--role", type=click.Choice(["all", "kernel", "baseline"]), default="all", show_default=True)
def list_kernels(device, role):
    """List every kernel: formats, targets, and whether it can run on this machine (and why not)."""
    target = resolve_target(device)
    rows = []
    for name, k in sorted(all_kernels().items()):
        if role != "all" and k.role != role:
            continue
        try:
            reason = k.unavailable_reason(target)
        except Exception as e:  # report, never crash the listing
            reason = f"error: {type(e).__name__}: {e}"
        rows.append([name, k.role, _kinds(k), ", ".join(k.formats), ", ".join(k.archs) if k.archs else "any",
                     _built(k), "yes" if reason is None else f"no: {reason}"])
    click.echo(f"kernels on {target.describe()}:")
    # Kinds, formats and the reason wrap; the rest keeps its width. The reason takes what is left of 100
    # columns, so a long kernel name narrows it rather than widening the table.
    click.echo(_fitted_table(rows, ["kernel", "role", "problems", "formats", "targets", "built", "runs here"]))
    errors = import_errors()
    if errors:
        click.echo("\nkernel modules that failed to import:")
        for mod, err in sorted(errors.items()):
            click.echo(f"  {mod}: {err}")
