"""Rendering results: one table per format, CSV and markdown, within 100 columns unless asked to be wide.

There is one table per format of the GEMM, and one per other problem kind (named after the competition's
problem, e.g. nvfp4_gemv: those exist in nvfp4 alone; `table_name`). Each table has one row per (kernel, shape)
in run order and, after each kernel's rows, a geometric-mean row
over the shapes that kernel passed and was timed on (only over the cells that have a value: speedup and
% of SOL are averaged over the shapes that have them). Speedup = the baseline's median / the kernel's median on
the same shape. By default (`render_tables`): failures come first with their reasons, the tables hold the
checked cases, a median marked `*` comes from a stopping rule that gave up before its noise target (its spread
is listed under the table), and skipped cases are collapsed into one line per reason naming the kernels.
`wide=True` shows every case in the tables with a detail column instead. CPU timings say so in every title.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import textwrap
from collections import OrderedDict

from tabulate import tabulate

from .case import CaseRecord, CaseStatus
from .problem import GEMM, KIND_SPECS, Shape

COLUMNS = ("kernel", "shape", "status", "median us", "TFLOP/s", "GB/s", "% SOL", "speedup", "detail")
WIDTH = 100
CPU_NOTE = "CPU times from a host clock, not comparable with GPU times"
NOT_CONVERGED = "*"
CSV_COLUMNS = ("format", "kernel", "role", "shape", "m", "n", "k", "l", "status", "median_us", "mean_us",
               "std_us", "min_us", "p10_us", "p90_us", "samples", "tflops", "gbps", "pct_sol", "speedup",
               "clock", "mode", "reason")
GEOMEAN = "geomean"


def geometric_mean(values) -> float | None:
    """The geometric mean of the positive, finite values among `values` (None and the rest ignored)."""
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return statistics.geometric_mean(vals) if vals else None


def shape_label(shape: Shape) -> str:
    """A record's shape as 'MxNxK[xL]' (the text of `Shape`, without the seed); a grouped case as
    'g8 M1024 N4096 K7168' (groups, total M, N and K or their range)."""
    return str(shape)


def table_name(case: CaseRecord) -> str:
    """The table a case belongs to: its format for the GEMM, the competition's problem name for the other kinds
    (with the format when it is not the one they exist in)."""
    if case.problem == GEMM:
        return case.format
    spec = KIND_SPECS[case.problem]
    return spec.competition if spec.formats and case.format in spec.formats else f"{spec.competition} {case.format}"


def _same_case_of(case: CaseRecord, kernel: str) -> tuple:
    return (kernel,) + case.key[1:]


def speedups(cases: list[CaseRecord], baseline: str | None) -> dict[int, float]:
    """Speedup of each timed case (by index) against the baseline's case of the same format and shape."""
    if not baseline:
        return {}
    base = {c.key: c.median_s for c in cases if c.kernel == baseline}
    out = {}
    for i, c in enumerate(cases):
        mine, theirs = c.median_s, base.get(_same_case_of(c, baseline))
        if mine and theirs:
            out[i] = theirs / mine
    return out


def _num(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _metric(case: CaseRecord, key: str):
    return (case.metrics or {}).get(key)


def is_cpu_run(cases: list[CaseRecord]) -> bool:
    """Whether the timings of these cases come from a host clock (a CPU run)."""
    return any(c.timing and c.timing.get("clock") == "cpu" for c in cases)


def baseline_label(baseline: str, cases: list[CaseRecord]) -> str:
    """The baseline named for what it is on the device that ran: on a CPU, cublas-dense is a torch CPU matmul."""
    if baseline == "cublas-dense" and is_cpu_run(cases):
        return "cublas-dense (a torch CPU matmul here)"
    return baseline


def _median_cell(case: CaseRecord) -> str:
    med = case.median_s
    if med is None:
        return "-"
    return f"{med * 1e6:.2f}" + ("" if case.converged else NOT_CONVERGED)


def format_rows(cases: list[CaseRecord], baseline: str | None, include_skipped: bool = True,
                detail: bool = True) -> "OrderedDict[str, list[list[str]]]":
    """Table rows per format (format -> rows), geometric-mean rows included; the last column is the detail
    (reason) unless `detail` is False; skipped cases left out unless `include_skipped`."""
    speed = speedups(cases, baseline)
    by_format: OrderedDict[str, OrderedDict[str, list[int]]] = OrderedDict()
    for i, c in enumerate(cases):
        by_format.setdefault(table_name(c), OrderedDict()).setdefault(c.kernel, []).append(i)
    tables: OrderedDict[str, list[list[str]]] = OrderedDict()
    for fmt, kernels in by_format.items():
        rows = []
        for kernel, idxs in kernels.items():
            timed = []
            for i in idxs:
                c = cases[i]
                if c.status == CaseStatus.SKIP and not include_skipped:
                    continue
                row = [kernel, shape_label(c.shape), c.status.value.upper(), _median_cell(c),
                       _num(_metric(c, "tflops")), _num(_metric(c, "gbps"), 1), _num(_metric(c, "pct_sol"), 1),
                       _num(speed.get(i))]
                rows.append(row + [c.reason or ""] if detail else row)
                if c.status == CaseStatus.PASS and c.median_s is not None:
                    timed.append(i)
            if len(idxs) > 1 and timed:
                gm_med = geometric_mean(cases[i].median_s for i in timed)
                row = [kernel, f"{GEOMEAN} ({len(timed)}/{len(idxs)})", "",
                       _num(gm_med * 1e6),
                       _num(geometric_mean(_metric(cases[i], "tflops") for i in timed)),
                       _num(geometric_mean(_metric(cases[i], "gbps") for i in timed), 1),
                       _num(geometric_mean(_metric(cases[i], "pct_sol") for i in timed), 1),
                       _num(geometric_mean(speed.get(i) for i in timed))]
                rows.append(row + [""] if detail else row)
        if rows:
            tables[fmt] = rows
    return tables


def _wrapped(text: str, width: int, indent: str = "  ") -> str:
    return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent + "    ",
                         break_on_hyphens=False)


def failure_lines(cases: list[CaseRecord], width: int = WIDTH) -> list[str]:
    """Failed and errored cases first, one wrapped line each with the reason."""
    bad = [c for c in cases if c.status.failing]
    if not bad:
        return []
    lines = [f"FAILED ({len(bad)} case(s)):"]
    for c in bad:
        lines.append(_wrapped(f"{c.kernel} {table_name(c)} {c.shape} {c.status.value.upper()}: {c.reason or ''}", width))
    return lines


def skipped_lines(cases: list[CaseRecord], width: int = WIDTH) -> list[str]:
    """Skipped cases collapsed: one wrapped line per reason, naming the kernels (and formats) it applies to."""
    by_reason: OrderedDict[str, OrderedDict[str, int]] = OrderedDict()
    for c in cases:
        if c.status == CaseStatus.SKIP:
            kernels = by_reason.setdefault(c.reason or "no reason given", OrderedDict())
            label = f"{c.kernel} ({table_name(c)})"
            kernels[label] = kernels.get(label, 0) + 1
    if not by_reason:
        return []
    total = sum(sum(k.values()) for k in by_reason.values())
    lines = [f"skipped ({total} case(s)):"]
    for reason, kernels in by_reason.items():
        names = ", ".join(f"{k} x{n}" if n > 1 else k for k, n in kernels.items())
        lines.append(_wrapped(f"{reason}: {names}", width))
    return lines


def note_lines(cases: list[CaseRecord], width: int = WIDTH) -> list[str]:
    """Footnotes: medians whose stopping rule did not converge (with their spread), notes of passed cases."""
    lines = []
    loose = [c for c in cases if c.timing and not c.converged]
    if loose:
        spread = ", ".join(f"{c.kernel} {c.shape} {100 * (c.timing['stats'].get('rse') or 0):.1f}%" for c in loose)
        lines.append(_wrapped(f"{NOT_CONVERGED} stopping rule gave up before its noise target (relative standard "
                              f"error of the mean): {spread}", width, indent=""))
    for c in cases:
        if c.status == CaseStatus.PASS and c.reason:
            lines.append(_wrapped(f"note: {c.kernel} {table_name(c)} {c.shape}: {c.reason}", width, indent=""))
    return lines


def render_tables(cases: list[CaseRecord], baseline: str | None = None, markdown: bool = False,
                  wide: bool = False, width: int = WIDTH) -> str:
    fmt = "github" if markdown else "simple"
    cpu = is_cpu_run(cases)
    parts = [] if wide else ["\n".join(failure_lines(cases, width))]
    for name, rows in format_rows(cases, baseline, include_skipped=wide, detail=wide).items():
        title = f"{name}" + (f" (speedup vs {baseline_label(baseline, cases)})" if baseline else "")
        heading = f"### {title}" if markdown else title
        if cpu:   # on a line of its own: every copy of a CPU table carries it, and it stays within the width
            heading += f"\n\n*{CPU_NOTE}*" if markdown else f"\n{CPU_NOTE}"
        headers = COLUMNS if wide else COLUMNS[:-1]
        parts.append(heading + "\n\n" + tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True))
    if not wide:
        parts.append("\n".join(note_lines(cases, width)))
        parts.append("\n".join(skipped_lines(cases, width)))
    return "\n\n".join(p for p in parts if p)


def _csv_size(v) -> str:
    """A size for the CSV: a grouped case's per-group sizes joined by '/'."""
    return "/".join(map(str, v)) if isinstance(v, tuple) else str(v)


def render_csv(cases: list[CaseRecord], baseline: str | None = None) -> str:
    speed = speedups(cases, baseline)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for i, c in enumerate(cases):
        timing = c.timing or {}
        stats = timing.get("stats") or {}

        def us(key, stats=stats):
            v = stats.get(key)
            return "" if v is None else f"{v * 1e6:.4f}"

        def opt(v):
            return "" if v is None else f"{v:.6g}"

        s = c.shape
        w.writerow([table_name(c), c.kernel, c.role or "", shape_label(s), _csv_size(s.m), _csv_size(s.n),
                    _csv_size(s.k), s.l, c.status.value,
                    us("median"), us("mean"), us("std"), us("min"), us("p10"), us("p90"), stats.get("n", ""),
                    opt(_metric(c, "tflops")), opt(_metric(c, "gbps")), opt(_metric(c, "pct_sol")),
                    opt(speed.get(i)), timing.get("clock", ""), timing.get("mode", ""), c.reason or ""])
    return buf.getvalue()


def _err(x) -> str:
    return "-" if x is None or x != x else f"{x:.3g}"


def render_checks(cases: list[CaseRecord], wide: bool = False, width: int = WIDTH) -> str:
    """The table of a check-only run (verify): failures first, the checked cases with their worst errors,
    skipped cases collapsed per reason (`wide`: every case in the table with its reason)."""
    shown = cases if wide else [c for c in cases if c.status != CaseStatus.SKIP]
    rows = []
    for c in shown:
        row = [c.kernel, table_name(c), shape_label(c.shape), c.status.value.upper(),
               _err((c.check or {}).get("max_abs_err")), _err((c.check or {}).get("max_rel_err"))]
        rows.append(row + [c.reason or ""] if wide else row)
    headers = ["kernel", "format", "shape", "status", "max abs", "max rel"] + (["detail"] if wide else [])
    parts = [] if wide else ["\n".join(failure_lines(cases, width))]
    if rows:
        parts.append(tabulate(rows, headers=headers, disable_numparse=True))
    if not wide:
        parts.append("\n".join(note_lines(cases, width)))
        parts.append("\n".join(skipped_lines(cases, width)))
    return "\n\n".join(p for p in parts if p)


# Launch parameters at their defaults are left out of the configuration column: the rest says what differs.
_CONFIG_DEFAULTS = {"maxnreg": None, "programs_per_sm": 1, "join_k": False, "pre_dequant_a": False,
                    "max_block_m": 128}


def config_text(config: dict | None) -> str:
    """A recorded launch configuration as '[source] tile MxNxK key=value ...' (defaults left out)."""
    if not config:
        return "-"
    rest = {k: v for k, v in config.items() if k != "source" and _CONFIG_DEFAULTS.get(k, object()) != v}
    parts = [f"[{config['source']}]"] if "source" in config else []
    if {"block_m", "block_n", "block_k"} <= set(rest):
        parts.append(f"tile {rest.pop('block_m')}x{rest.pop('block_n')}x{rest.pop('block_k')}")
    return " ".join(parts + [f"{k}={v}" for k, v in rest.items()])


def render_configs(cases: list[CaseRecord], width: int = 100) -> str:
    """Which launch configuration every case ran with (and, when tuning ran, how many candidates it timed)."""
    rows = []
    for c in cases:
        tuned = f"{len(c.tuning)} timed" if c.tuning else ""
        rows.append([c.kernel, table_name(c), shape_label(c.shape), config_text(c.config), tuned])
    headers = ["kernel", "format", "shape", "configuration", "tuning"]
    # Every other column at its widest, plus the two-space gaps between the five columns; tabulate can come
    # out two characters wider than a wrapped column's limit.
    fixed = sum(max([len(headers[i])] + [len(r[i]) for r in rows]) for i in (0, 1, 2, 4)) + 2 * 4
    return tabulate(rows, headers=headers, disable_numparse=True,
                    maxcolwidths=[None, None, None, max(24, width - fixed - 2), None])
