"""`fp4bench compare BASELINE NEW`: judge a fresh run against a stored baseline (see fp4bench.compare).

BASELINE is a results file or a directory of baselines (the file for the new run's GPU is picked).
Prints the comparison within 100 columns (the cases that need a look; `--all` every case), or markdown with
`--markdown`; `--summary FILE` writes the markdown summary (every case) for a CI step summary. Exit 0 no
regression, 1 regression or correctness failure, 2 unusable input.
"""

from __future__ import annotations

import sys

import click

from ..compare import (
    DEFAULT_THRESHOLD,
    CompareInputError,
    compare_documents,
    load_document,
    parse_threshold,
    render_markdown,
    render_text,
)
from ..errors import InputError
from ..results import atomic_write_text


@click.command()
@click.argument("baseline", type=click.Path())
@click.argument("new", type=click.Path())
@click.option("--threshold", default=f"{DEFAULT_THRESHOLD * 100:g}%", show_default=True,
              help="Slowdown tolerated before a case counts as a regression (5% or 0.05).")
@click.option("--strict", is_flag=True,
              help="Refuse runs from a different GPU, driver or clock (exit 2) and fail on missing cases.")
@click.option("--allow-gpu-change", is_flag=True,
              help="Compare runs from different GPU models (refused by default: every case would differ).")
@click.option("--all", "show_all", is_flag=True, help="List every case, not only those that need a look.")
@click.option("--markdown", is_flag=True, help="Print the markdown summary (every case) instead of the table.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the markdown summary to this file (e.g. $GITHUB_STEP_SUMMARY).")
def compare(baseline, new, threshold, strict, allow_gpu_change, show_all, markdown, summary_path):
    """Compare NEW results with BASELINE results: ratios, regressions, correctness failures."""
    try:
        limit = parse_threshold(threshold)
        new_doc, new_path = load_document(new, "new run")
        base_doc, base_path = load_document(baseline, "baseline", for_doc=new_doc)
        result = compare_documents(base_doc, new_doc, limit, strict, allow_gpu_change)
    except CompareInputError as e:
        raise InputError(str(e)) from None
    result.base_path, result.new_path = str(base_path), str(new_path)
    click.echo(render_markdown(result) if markdown else render_text(result, show_all), nl=False)
    if summary_path:
        try:
            atomic_write_text(summary_path, render_markdown(result))
        except OSError as e:
            raise InputError(f"cannot write summary {summary_path}: {e.strerror or e}") from None
    sys.exit(result.exit_code)
