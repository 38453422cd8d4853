"""`fp4bench plot RESULTS.json -o FILE.png|.svg`: the figures of fp4bench.plot.

One document: per format, a roofline and the speedup over the baseline kernel. Two documents
(BASELINE NEW, in `fp4bench compare`'s order; BASELINE may be a directory of baselines): the comparison
chart. Inputs are read and checked before matplotlib is needed, so a bad file is reported as such even
without it; every problem is one line `Error: ...` and exit code 2 (matplotlib missing included).
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Image to write: .png or .svg.")
@click.option("--baseline", default=None,
              help="Kernel the speedups are relative to (default: the run's own, else cublas-dense; 'none').")
@click.option("--threshold", default="5%", show_default=True,
              help="Two documents: the slowdown tolerated before a case is a regression.")
@click.option("--allow-gpu-change", is_flag=True, help="Two documents: compare runs from different GPU models.")
def plot(results, output, baseline, threshold, allow_gpu_change):
    """Draw RESULTS (a roofline and speedups), or BASELINE NEW (their comparison), into an image."""
    from ..compare import (
        CompareInputError,
        baseline_path,
        compare_documents,
        environment_summary,
        load_document,
        parse_threshold,
    )
    from ..plot import OUTPUT_SUFFIXES, PlotUnavailable, compare_figure, overview_figure, write_figure
    from ..results import ResultsFileError, load_results

    if Path(output).suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"-o {output}: the image must end in {' or '.join(OUTPUT_SUFFIXES)}")
    if len(results) > 2:
        raise InputError(f"{len(results)} results files: give one (roofline and speedups) or two "
                         f"(BASELINE NEW: their comparison)")
    try:
        if len(results) == 1:
            doc = load_results(results[0])
            if baseline and baseline.lower() != "none" and not any(c.kernel == baseline for c in doc["cases"]):
                raise InputError(f"baseline {baseline!r} is not in {results[0]}")
            fig = overview_figure(doc, results[0], baseline)
        else:
            limit = parse_threshold(threshold)
            new_doc, new_path = load_document(results[1], "new run")
            if Path(results[0]).is_dir() and not baseline_path(results[0], new_doc).is_file():
                # load_document says so too, listing every file there: too long a line for a terminal.
                raise InputError(f"no baseline {baseline_path(results[0], new_doc).name} in {results[0]} for "
                                 f"{environment_summary(new_doc)['gpu']} (fp4bench run --save-baseline)")
            base_doc, base_path = load_document(results[0], "baseline", for_doc=new_doc)
            gpus = environment_summary(base_doc)["gpu"], environment_summary(new_doc)["gpu"]
            if gpus[0] != gpus[1] and not allow_gpu_change:
                # compare_documents refuses too, in a line longer than a terminal.
                raise InputError(f"baseline on {gpus[0]}, new run on {gpus[1]}: --allow-gpu-change to compare")
            comparison = compare_documents(base_doc, new_doc, limit, allow_gpu_change=allow_gpu_change)
            fig = compare_figure(comparison, base_doc, new_doc, str(base_path), str(new_path))
        write_figure(fig, output)
    except (ResultsFileError, CompareInputError, PlotUnavailable) as e:
        raise InputError(str(e)) from None
    except OSError as e:
        raise InputError(f"cannot write {output}: {e.strerror or e}") from None
    click.echo(f"wrote {output}")
