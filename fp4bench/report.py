"""Rendering results: one table per format, CSV and markdown.

Each table has one row per (kernel, shape) in run order and, after each kernel's rows, a geometric-mean row
over the shapes that kernel passed and was timed on (only over the cells that have a value: speedup and
% of SOL are averaged over the shapes that have them). Failed, errored and skipped cases show their status
and reason and no numbers. Speedup = the baseline's median / the kernel's median on the same shape.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import OrderedDict

from tabulate import tabulate

from .case import CaseRecord, CaseStatus
from .problem import Shape

COLUMNS = ("kernel", "shape", "status", "median us", "TFLOP/s", "GB/s", "% SOL", "speedup", "detail")
CSV_COLUMNS = ("format", "kernel", "role", "shape", "m", "n", "k", "l", "status", "median_us", "mean_us",
               "std_us", "min_us", "p10_us", "p90_us", "samples", "tflops", "gbps", "pct_sol", "speedup",
               "clock", "mode", "reason")
GEOMEAN = "geomean"


def geometric_mean(values) -> float | None:
    """The geometric mean of the positive, finite values among `values` (None and the rest ignored)."""
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return statistics.geometric_mean(vals) if vals else None


def shape_label(shape: Shape) -> str:
    """A record's shape as 'MxNxK[xL]' (the text of `Shape`, without the seed)."""
    return str(shape)


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


def format_rows(cases: list[CaseRecord], baseline: str | None) -> "OrderedDict[str, list[list[str]]]":
    """Table rows per format (format -> rows), geometric-mean rows included."""
    speed = speedups(cases, baseline)
    by_format: OrderedDict[str, OrderedDict[str, list[int]]] = OrderedDict()
    for i, c in enumerate(cases):
        by_format.setdefault(c.format, OrderedDict()).setdefault(c.kernel, []).append(i)
    tables: OrderedDict[str, list[list[str]]] = OrderedDict()
    for fmt, kernels in by_format.items():
        rows = []
        for kernel, idxs in kernels.items():
            timed = []
            for i in idxs:
                c = cases[i]
                med = c.median_s
                rows.append([kernel, shape_label(c.shape), c.status.value.upper(),
                             _num(None if med is None else med * 1e6), _num(_metric(c, "tflops")),
                             _num(_metric(c, "gbps"), 1), _num(_metric(c, "pct_sol"), 1), _num(speed.get(i)),
                             c.reason or ""])
                if c.status == CaseStatus.PASS and med is not None:
                    timed.append(i)
            if len(idxs) > 1 and timed:
                gm_med = geometric_mean(cases[i].median_s for i in timed)
                rows.append([kernel, f"{GEOMEAN} ({len(timed)}/{len(idxs)})", "",
                             _num(gm_med * 1e6),
                             _num(geometric_mean(_metric(cases[i], "tflops") for i in timed)),
                             _num(geometric_mean(_metric(cases[i], "gbps") for i in timed), 1),
                             _num(geometric_mean(_metric(cases[i], "pct_sol") for i in timed), 1),
                             _num(geometric_mean(speed.get(i) for i in timed)), ""])
        tables[fmt] = rows
    return tables


def render_tables(cases: list[CaseRecord], baseline: str | None = None, markdown: bool = False,
                  clock_note: str | None = None) -> str:
    fmt = "github" if markdown else "simple"
    parts = []
    for name, rows in format_rows(cases, baseline).items():
        title = f"{name}" + (f" (speedup vs {baseline})" if baseline else "")
        if clock_note:
            title += f"; {clock_note}"
        heading = f"### {title}" if markdown else title
        parts.append(heading + "\n\n" + tabulate(rows, headers=COLUMNS, tablefmt=fmt, disable_numparse=True))
    return "\n\n".join(parts)


def render_csv(cases: list[CaseRecord], baseline: str | None = None) -> str:
    speed = speedups(cases, baseline)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for i, c in enumerate(cases):
        timing = c.timing or {}
        stats = timing.get("stats") or {}

        def us(key):
            v = stats.get(key)
            return "" if v is None else f"{v * 1e6:.4f}"

        def opt(v):
            return "" if v is None else f"{v:.6g}"

        s = c.shape
        w.writerow([c.format, c.kernel, c.role or "", shape_label(s), s.m, s.n, s.k, s.l, c.status.value,
                    us("median"), us("mean"), us("std"), us("min"), us("p10"), us("p90"), stats.get("n", ""),
                    opt(_metric(c, "tflops")), opt(_metric(c, "gbps")), opt(_metric(c, "pct_sol")),
                    opt(speed.get(i)), timing.get("clock", ""), timing.get("mode", ""), c.reason or ""])
    return buf.getvalue()


def _err(x) -> str:
    return "-" if x is None or x != x else f"{x:.3g}"


def render_checks(cases: list[CaseRecord]) -> str:
    """The table of a check-only run (verify): status, worst errors and the reason per case."""
    rows = [[c.kernel, c.format, shape_label(c.shape), c.status.value.upper(),
             _err((c.check or {}).get("max_abs_err")), _err((c.check or {}).get("max_rel_err")), c.reason or ""]
            for c in cases]
    return tabulate(rows, headers=["kernel", "format", "shape", "status", "max abs", "max rel", "detail"],
                    disable_numparse=True)


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
        rows.append([c.kernel, c.format, shape_label(c.shape), config_text(c.config), tuned])
    headers = ["kernel", "format", "shape", "configuration", "tuning"]
    # Every other column at its widest, plus the two-space gaps between the five columns; tabulate can come
    # out two characters wider than a wrapped column's limit.
    fixed = sum(max([len(headers[i])] + [len(r[i]) for r in rows]) for i in (0, 1, 2, 4)) + 2 * 4
    return tabulate(rows, headers=headers, disable_numparse=True,
                    maxcolwidths=[None, None, None, max(24, width - fixed - 2), None])
