"""Rendering results: one table per format, CSV, markdown, and a progress bar on stderr.

Each table has one row per (kernel, shape) in run order and, after each kernel's rows, a geometric-mean row
over the shapes that kernel passed and was timed on (only over the cells that have a value: speedup and
% of SOL are averaged over the shapes that have them). Failed, errored and skipped cases show their status
and reason and no numbers. Speedup = the baseline's median / the kernel's median on the same shape.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections import OrderedDict

from tabulate import tabulate

from .harness import STATUS_PASS
from .problem import Shape

COLUMNS = ("kernel", "shape", "status", "median us", "TFLOP/s", "GB/s", "% SOL", "speedup", "detail")
CSV_COLUMNS = ("format", "kernel", "role", "shape", "m", "n", "k", "l", "status", "median_us", "mean_us",
               "std_us", "min_us", "p10_us", "p90_us", "samples", "tflops", "gbps", "pct_sol", "speedup",
               "clock", "mode", "reason")
GEOMEAN = "geomean"


def geometric_mean(values) -> float | None:
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def shape_label(shape: dict) -> str:
    """A record's shape as 'MxNxK[xL]' (the text of `Shape`)."""
    return str(Shape(shape["m"], shape["n"], shape["k"], shape.get("l", 1)))


def _shape_key(shape: dict) -> tuple:
    return (shape["m"], shape["n"], shape["k"], shape.get("l", 1), shape.get("seed"))


def median_s(case: dict) -> float | None:
    timing = case.get("timing")
    return timing["stats"]["median"] if timing else None


def speedups(cases: list[dict], baseline: str | None) -> dict[int, float]:
    """Speedup of each timed case (by index) against the baseline's case of the same format and shape."""
    if not baseline:
        return {}
    base = {(c["format"], _shape_key(c["shape"])): median_s(c) for c in cases if c["kernel"] == baseline}
    out = {}
    for i, c in enumerate(cases):
        mine, theirs = median_s(c), base.get((c["format"], _shape_key(c["shape"])))
        if mine and theirs:
            out[i] = theirs / mine
    return out


def _num(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _metric(case: dict, key: str):
    return (case.get("metrics") or {}).get(key)


def format_rows(cases: list[dict], baseline: str | None) -> "OrderedDict[str, list[list[str]]]":
    """Table rows per format (format -> rows), geometric-mean rows included."""
    speed = speedups(cases, baseline)
    by_format: OrderedDict[str, OrderedDict[str, list[int]]] = OrderedDict()
    for i, c in enumerate(cases):
        by_format.setdefault(c["format"], OrderedDict()).setdefault(c["kernel"], []).append(i)
    tables: OrderedDict[str, list[list[str]]] = OrderedDict()
    for fmt, kernels in by_format.items():
        rows = []
        for kernel, idxs in kernels.items():
            timed = []
            for i in idxs:
                c = cases[i]
                med = median_s(c)
                rows.append([kernel, shape_label(c["shape"]), c["status"].upper(),
                             _num(None if med is None else med * 1e6), _num(_metric(c, "tflops")),
                             _num(_metric(c, "gbps"), 1), _num(_metric(c, "pct_sol"), 1), _num(speed.get(i)),
                             c.get("reason") or ""])
                if c["status"] == STATUS_PASS and med is not None:
                    timed.append(i)
            if len(idxs) > 1 and timed:
                gm_med = geometric_mean(median_s(cases[i]) for i in timed)
                rows.append([kernel, f"{GEOMEAN} ({len(timed)}/{len(idxs)})", "",
                             _num(gm_med * 1e6),
                             _num(geometric_mean(_metric(cases[i], "tflops") for i in timed)),
                             _num(geometric_mean(_metric(cases[i], "gbps") for i in timed), 1),
                             _num(geometric_mean(_metric(cases[i], "pct_sol") for i in timed), 1),
                             _num(geometric_mean(speed.get(i) for i in timed)), ""])
        tables[fmt] = rows
    return tables


def render_tables(cases: list[dict], baseline: str | None = None, markdown: bool = False,
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


def render_csv(cases: list[dict], baseline: str | None = None) -> str:
    speed = speedups(cases, baseline)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for i, c in enumerate(cases):
        timing = c.get("timing") or {}
        stats = timing.get("stats") or {}

        def us(key):
            v = stats.get(key)
            return "" if v is None else f"{v * 1e6:.4f}"

        def opt(v):
            return "" if v is None else f"{v:.6g}"

        s = c["shape"]
        w.writerow([c["format"], c["kernel"], c.get("role", ""), shape_label(s), s["m"], s["n"], s["k"],
                    s.get("l", 1), c["status"], us("median"), us("mean"), us("std"), us("min"), us("p10"),
                    us("p90"), stats.get("n", ""), opt(_metric(c, "tflops")), opt(_metric(c, "gbps")),
                    opt(_metric(c, "pct_sol")), opt(speed.get(i)), timing.get("clock", ""),
                    timing.get("mode", ""), c.get("reason") or ""])
    return buf.getvalue()


class ProgressBar:
    """`[#####.....] 12/40 kernel fmt shape` on one stderr line; plain lines when stderr is not a terminal."""

    WIDTH = 24

    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()

    def _line(self, label: str) -> str:
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        return f"[{bar}] {self.done}/{self.total} {time.monotonic() - self.started:5.0f}s {label}"

    def start(self, label: str) -> None:
        """Show what is running now."""
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K" + self._line(label))
            self.stream.flush()

    def advance(self, label: str) -> None:
        """One more case finished (with its outcome in `label`)."""
        self.done += 1
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K" + self._line(label))
        else:
            self.stream.write(self._line(label) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
