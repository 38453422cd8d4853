"""`fp4bench verify`: check kernels against the exact reference on a shape set (no timing)."""

from __future__ import annotations

import sys

import click
from tabulate import tabulate

from ..errors import EXIT_FAILED, EXIT_OK
from ..harness import verify_case
from ..kernels import all_kernels
from .common import (check_shapes_fit, check_shapes_legal, device_option, format_option, parse_formats, parse_kernels,
                     parse_shapes, resolve_target, shapes_option)

# The competition's harness advances the seed by 42 for each input of a batch.
SEED_STRIDE = 42


def _fmt_err(x) -> str:
    return "-" if x is None or x != x else f"{x:.3g}"


@click.command()
@shapes_option("shapes/verify.yml")
@click.option("--kernel", "kernels", multiple=True,
              help="Kernel name, glob pattern or submission.py path; repeatable (default: every kernel).")
@format_option()
@device_option()
@click.option("--seed", type=int, default=None, help="Base seed (default: each shape's own).")
@click.option("--seeds", "n_seeds", type=click.IntRange(1, 100), default=2, show_default=True,
              help="Random inputs per shape.")
def verify(shapes_path, kernels, formats, device, seed, n_seeds):
    """Check every selected kernel on every shape against the exact reference."""
    fmts = parse_formats(formats)
    shapes = parse_shapes(shapes_path)
    check_shapes_legal(shapes, fmts, shapes_path)
    selected = parse_kernels(kernels) if kernels else [k for k in all_kernels().values() if k.role == "kernel"]
    target = resolve_target(device)
    check_shapes_fit(shapes, fmts, target)
    click.echo(f"fp4bench verify on {target.describe()}: {len(selected)} kernel(s), {len(shapes)} shape(s), "
               f"{n_seeds} seed(s) each", err=True)

    rows, failed = [], 0
    for fmt in fmts:
        for kernel in selected:
            if fmt.name not in kernel.formats:
                continue
            for shape in shapes:
                base = shape.seed if seed is None else seed
                seeds = [base + SEED_STRIDE * i for i in range(n_seeds)]
                outcome = verify_case(kernel, shape, fmt, target, seeds)
                failed += outcome.failed
                chk = outcome.check
                rows.append([kernel.name, fmt.name, str(shape), outcome.status.upper(),
                             _fmt_err(chk.max_abs_err if chk else None), _fmt_err(chk.max_rel_err if chk else None),
                             outcome.reason or ""])
    if not rows:
        click.echo("no kernel supports the selected format(s)", err=True)
    click.echo(tabulate(rows, headers=["kernel", "format", "shape", "status", "max abs", "max rel", "detail"]))
    passed = sum(r[3] == "PASS" for r in rows)
    skipped = sum(r[3] == "SKIP" for r in rows)
    click.echo(f"{passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)
