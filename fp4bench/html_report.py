"""One self-contained HTML page of a results document (`fp4bench report RESULTS.json --html FILE`).

Constraints:
- The markup and the CSS are one jinja2 template shipped with the package (`templates/results.html`); this
  module computes what goes into it (texts, rows, CSS classes) and nothing of the markup.
- Self-contained: inline CSS, no scripts, no external stylesheet, font or image. The plots are base64 PNGs
  inside the page, so the file can be uploaded as a CI artifact or mailed and opened offline.
- matplotlib is optional (`fp4bench.plot`): without it the page has every table and a note saying how to get
  the plots.
- Every value taken from the document is HTML-escaped (the template autoescapes): kernel names, reasons and
  command lines are user text.
- The tables are `fp4bench.report.format_rows`, the rows of the terminal and README tables; skipped cases are
  not in them but collapsed below into one line per reason naming the kernels.
- Order: what a reader needs first comes first: the summary and failures, the plots, the tables, the skipped
  cases, the environment. Readable on a laptop: the page is at most 1240 px wide and a table wider than the
  window scrolls inside its box.
"""

from __future__ import annotations

import base64
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jinja2

from .case import CaseCounts, CaseRecord, CaseStatus
from .report import COLUMNS, GEOMEAN, config_text, format_rows, shape_label, table_name

TEMPLATE = "results.html"


# Clock and sensor readings of the fingerprint (fp4bench.device.current_clocks), in words.
CLOCK_FACTS = {"sm_mhz": "SM {:g} MHz", "mem_mhz": "memory {:g} MHz", "temperature_c": "{:g} °C",
               "power_w": "{:.0f} W"}


@dataclass(frozen=True)
class Cell:
    text: str
    css: str = ""          # the cell's CSS classes, space-separated


@dataclass(frozen=True)
class Row:
    cells: list[Cell]
    css: str = ""


@dataclass(frozen=True)
class Table:
    headers: list[Cell]
    rows: list[Row] = field(default_factory=list)


def _table(headers, rows, numeric=(), row_classes=None, cell_classes=None) -> Table:
    """A table for the template; `numeric` column indices are right-aligned, classes per row and per cell
    optional."""
    head = [Cell(str(h), "num" if i in numeric else "") for i, h in enumerate(headers)]
    body = []
    for r, row in enumerate(rows):
        cells = []
        for i, v in enumerate(row):
            classes = ("num" if i in numeric else "", (cell_classes or {}).get((r, i), ""))
            cells.append(Cell("" if v is None else str(v), " ".join(x for x in classes if x)))
        body.append(Row(cells, (row_classes or {}).get(r) or ""))
    return Table(head, body)


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------
def environment_rows(doc: dict) -> list[tuple[str, str]]:
    """(label, value) rows: the GPUs, driver, software, commit, command, clocks, ceilings and timing
    settings."""
    env = doc.get("environment") or {}
    settings = doc.get("settings") or {}
    sw = env.get("software") or {}
    rows = []
    gpus = [g for g in env.get("gpus") or [] if isinstance(g, dict)]
    for g in gpus:
        facts = [g.get("arch"), f"{g['sm_count']} SMs" if g.get("sm_count") else None,
                 f"{g['total_memory_bytes'] / 2**30:.0f} GiB" if g.get("total_memory_bytes") else None,
                 f"L2 {g['l2_bytes'] / 2**20:.0f} MiB" if g.get("l2_bytes") else None,
                 f"max SM clock {g['max_sm_clock_mhz']:.0f} MHz" if g.get("max_sm_clock_mhz") else None]
        rows.append((f"GPU {g.get('index', '')}".strip(),
                     f"{g.get('name', '?')} ({', '.join(f for f in facts if f)})"))
    if not gpus:
        rows.append(("GPU", "none (CPU run)"))
    drivers = sorted({str(g.get("driver_version")) for g in gpus if g.get("driver_version")})
    runtimes = sorted({str(g.get("cuda_runtime_version")) for g in gpus if g.get("cuda_runtime_version")})
    if drivers:
        runtime = f" (CUDA runtime {', '.join(runtimes)})" if runtimes else ""
        rows.append(("driver", ", ".join(drivers) + runtime))
    torch_cuda = f" (CUDA {sw['torch_cuda']})" if sw.get("torch_cuda") else ""
    torch_text = sw.get("torch") and sw["torch"] + torch_cuda
    for label, value in (("torch", torch_text), ("triton", sw.get("triton")), ("CUTLASS", sw.get("cutlass")),
                         ("cuda-python", sw.get("cuda_python")), ("python", sw.get("python"))):
        rows.append((label, value or "-"))
    rows.append(("fp4bench", f"{sw.get('fp4bench') or '?'}, commit {sw.get('fp4bench_commit') or 'unknown'}"))
    rows.append(("command", env.get("command") or "-"))
    rows.append(("created", env.get("created") or "-"))
    rows.append(("host", " · ".join(x for x in (env.get("host"), env.get("platform")) if x) or "-"))
    clocks = env.get("clocks") or {}
    for when in ("start", "end"):
        for lane, c in sorted((clocks.get(when) or {}).items()):
            if isinstance(c, dict) and c:
                facts = [CLOCK_FACTS[k].format(v) if k in CLOCK_FACTS else f"{k} {v}" for k, v in c.items()
                         if isinstance(v, (int, float))]
                rows.append((f"clocks at {when}", f"GPU {lane}: " + ", ".join(facts)))
    for lane, c in sorted((settings.get("ceilings") or {}).items()):
        if isinstance(c, dict) and c.get("copy_bytes_per_s"):
            rates = ", ".join(f"{k} {v / 1e12:.0f} TFLOP/s"
                              for k, v in (c.get("matrix_flops_per_s") or {}).items())
            rows.append((f"ceilings (GPU {lane})", f"copy {c['copy_bytes_per_s'] / 1e12:.2f} TB/s, {rates}; "
                                                   f"measured {c.get('measured_at') or '?'}"))
    timing = settings.get("timing")
    if isinstance(timing, dict):
        rows.append(("timing", timing_text(timing)))
    return rows


def timing_text(timing: dict) -> str:
    """The timing settings of a run in words: 'fp4bench timer, eager, cold L2, until 0.5% RSE or 1 s, ...'."""
    bits = [f"{timing.get('timer') or 'fp4bench'} timer", str(timing.get("mode") or "eager"),
            "cold L2" if timing.get("cold_l2") else "warm L2"]
    if timing.get("target_rse") is not None and timing.get("budget_s") is not None:
        bits.append(f"until the standard error is {timing['target_rse'] * 100:g}% of the mean or "
                    f"{timing['budget_s']:g} s per case")
    if timing.get("min_samples"):
        bits.append(f"at least {timing['min_samples']} samples")
    return ", ".join(bits)


def _failures(cases: list[CaseRecord]) -> Table | None:
    """The failed and erroneous cases, or None when there are none."""
    bad = [c for c in cases if c.status.failing]
    if not bad:
        return None
    rows = []
    for c in bad:
        check = c.check or {}
        mism = (f"{check['mismatches']} / {check['total']}" if check.get("mismatches") is not None
                and check.get("total") else "-")
        first = "; ".join(str(m) for m in (check.get("first_mismatches") or [])[:3])
        rows.append([c.kernel, table_name(c), shape_label(c.shape), c.status.value.upper(), mism,
                     _num(check.get("max_abs_err")), _num(check.get("max_rel_err")),
                     "; ".join(x for x in [c.reason or "", first, *c.findings] if x)])
    classes = {(r, 3): bad[r].status.value for r in range(len(bad))}
    classes.update({(r, 7): "wrap-text" for r in range(len(bad))})
    headers = ["kernel", "format", "shape", "status", "mismatches", "max abs err", "max rel err", "detail"]
    return _table(headers, rows, numeric=(4, 5, 6), cell_classes=classes)


def _num(v) -> str:
    return "-" if v is None or v != v else f"{v:.3g}"


def _speed_class(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        return ""
    # Within 2% is left uncoloured: run-to-run noise of one case is of that order (compare's threshold is 5%).
    return "faster" if value > 1.02 else "slower" if value < 0.98 else ""


@dataclass(frozen=True)
class FormatTable:
    name: str
    table: Table


def _format_tables(checked: list[CaseRecord], baseline: str | None) -> list[FormatTable]:
    """One table per format of the checked cases: the rows of `report.format_rows`, with CSS classes."""
    tables = []
    speed_col = COLUMNS.index("speedup")
    for fmt, rows in format_rows(checked, baseline).items():
        # The detail column is kept only when some row of this format has a reason.
        with_detail = any(r[-1] for r in rows)
        headers = list(COLUMNS if with_detail else COLUMNS[:-1])
        rows = [r if with_detail else r[:-1] for r in rows]
        row_classes, cell_classes = {}, {}
        previous = None
        for i, r in enumerate(rows):
            if r[1].startswith(GEOMEAN):
                row_classes[i] = "gm"
            elif r[0] != previous and previous is not None:
                row_classes[i] = "first"
            previous = r[0]
            if r[2]:
                cell_classes[(i, 2)] = r[2].lower()
            cell_classes[(i, speed_col)] = _speed_class(r[speed_col])
            if with_detail:
                cell_classes[(i, len(r) - 1)] = "wrap-text"
        tables.append(FormatTable(fmt, _table(headers, rows, numeric=(3, 4, 5, 6, 7), row_classes=row_classes,
                                              cell_classes=cell_classes)))
    return tables


def skip_groups(cases: list[CaseRecord]) -> "OrderedDict[str, Counter]":
    """Skip reason -> Counter of 'kernel (format)': the skipped cases one line per reason."""
    groups: OrderedDict[str, Counter] = OrderedDict()
    for c in cases:
        if c.status == CaseStatus.SKIP:
            groups.setdefault(c.reason or "no reason given", Counter())[f"{c.kernel} ({table_name(c)})"] += 1
    return groups


@dataclass(frozen=True)
class SkipLine:
    reason: str
    total: str        # " (5 cases)" when several kernels share the reason, else ""
    kernels: str      # "sm120-nvfp4 (nvfp4) ×2, sm120-w4a8 (w4a8)"


def _skip_lines(cases: list[CaseRecord]) -> list[SkipLine]:
    lines = []
    for reason, kernels in skip_groups(cases).items():
        names = ", ".join(f"{k} ×{n}" if n > 1 else k for k, n in kernels.items())
        total = f" ({sum(kernels.values())} cases)" if len(kernels) > 1 else ""
        lines.append(SkipLine(reason, total, names))
    return lines


def _configs(cases: list[CaseRecord]) -> Table | None:
    rows = [[c.kernel, table_name(c), shape_label(c.shape), config_text(c.config)]
            for c in cases if c.status != CaseStatus.SKIP and c.config]
    return _table(["kernel", "format", "shape", "configuration"], rows) if rows else None


@dataclass(frozen=True)
class Plots:
    """The plots section: a PNG (base64) with its alt text and caption, or why there is none."""

    png: str = ""
    alt: str = ""
    caption: str = ""
    install_hint: str = ""   # set when matplotlib is missing


def _plots(doc: dict, source: str, baseline: str | None) -> Plots:
    from .plot import INSTALL_HINT, PlotUnavailable, figure_bytes, is_timed, overview_figure

    if not any(is_timed(c) for c in doc["cases"]):
        return Plots()
    try:
        fig = overview_figure(doc, source, baseline or "none")
    except PlotUnavailable:
        return Plots(install_hint=INSTALL_HINT)
    png = base64.b64encode(figure_bytes(fig, "png")).decode("ascii")
    alt = "Speedup over the baseline per shape and kernel, and a roofline, per format"
    speedup = f"the speedup over {baseline} per shape (left; bold: geometric mean) and " if baseline else ""
    caption = (f"Per format: {speedup}achieved TFLOP/s against arithmetic intensity under the GPU's measured "
               f"ceilings.")
    return Plots(png, alt, caption)


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("fp4bench", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template(TEMPLATE)


def render_html(doc: dict, source: str, baseline: str | None, plots: bool = True) -> str:
    """The page of `doc` (a loaded results document; `source` its path). `baseline`: the kernel speedups are
    relative to, or None. `plots=False` leaves the plots out (the tables stay)."""
    from .plot import is_cpu_document

    cases: list[CaseRecord] = doc["cases"]
    env = doc.get("environment") or {}
    sw = env.get("software") or {}
    gpus = sorted({g.get("name", "?") for g in env.get("gpus") or [] if isinstance(g, dict)}) or ["CPU"]
    counts = CaseCounts.of(cases).counts
    badges = []
    for status, label in ((CaseStatus.PASS, "passed"), (CaseStatus.FAIL, "failed"),
                          (CaseStatus.ERROR, "errors"), (CaseStatus.SKIP, "skipped")):
        css = "bad" if status.failing and counts[status] else "ok" if status == CaseStatus.PASS else ""
        badges.append(Cell(f"{counts[status]} {label}", css))
    subtitle = [str(x) for x in (Path(source).name, ", ".join(gpus), env.get("created"),
                                 f"commit {(sw.get('fp4bench_commit') or 'unknown')[:12]}") if x]
    checked = [c for c in cases if c.status != CaseStatus.SKIP]
    return _template().render(
        title=f"fp4bench results: {', '.join(gpus)}", source_name=Path(source).name, subtitle=subtitle,
        badges=badges, cpu=is_cpu_document(doc), baseline=baseline,
        failures={"table": _failures(cases), "checked": CaseCounts.of(cases).checked},
        plots=_plots(doc, source, baseline) if plots else None,
        formats=_format_tables(checked, baseline) if checked else None,
        unconverged=any(c.timing and not c.converged for c in checked),
        configs=_configs(cases), skipped_count=counts[CaseStatus.SKIP], skips=_skip_lines(cases),
        environment=environment_rows(doc))
