"""Figures of results documents: a roofline and the speedup over the baseline of one run, and the comparison
of two runs.

Constraints:
- matplotlib is an optional extra (`pip install "fp4bench[plot]"`). It is imported only by
  `require_matplotlib`, so this module (and `fp4bench report`) loads without it; a missing matplotlib is one
  `PlotUnavailable` line. Figures are `matplotlib.figure.Figure` objects, never pyplot's global state: no
  display, no backend choice, nothing shared between calls.
- Only passed, timed cases are drawn. Every figure's caption says what was left out and why.
- Numbers are the document's own: achieved TFLOP/s from `case.metrics`, arithmetic intensity from
  `case.sol` (FLOPs over the bytes a kernel must move), roofs from `settings["ceilings"]` (the GPU's
  measured ceilings, never datasheet numbers). Speedups are `fp4bench.report.speedups`; the comparison is
  `fp4bench.compare.compare_documents`' rows, so a chart and the tables never disagree.
- A document timed with the host clock is titled `CPU_NOTE`.
- A kernel has the same colour and marker in every panel of a figure; the baseline kernel is grey.
- Output is PNG or SVG, chosen by the file's suffix, written atomically and readable by everyone.
"""

from __future__ import annotations

import io
import math
import statistics
import textwrap
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .case import CaseRecord, CaseStatus
from .report import geometric_mean, shape_label, speedups, table_name
from .results import atomic_write
from .sol import RATE_FOR_PATH, Ceilings

INSTALL_HINT = 'pip install "fp4bench[plot]"'
CPU_NOTE = "CPU times, not comparable with GPU times"
# The same default as `fp4bench run --baseline`.
DEFAULT_BASELINE = "cublas-dense"
OUTPUT_SUFFIXES = (".png", ".svg")

# Colour-blind-safe qualitative colours (Okabe-Ito, the yellows darkened to read on white), then more from
# matplotlib's tab10 for long kernel lists. Filled markers only: thin ones vanish at this size.
KERNEL_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#A6761D", "#56B4E9", "#000000",
                  "#9467bd", "#8c564b", "#bcbd22", "#17becf", "#d62728", "#2ca02c", "#1f77b4", "#ff7f0e")
KERNEL_MARKERS = ("o", "s", "^", "v", "p", "h", "<", ">", "P", "X")
BASELINE_STYLE = ("#7f7f7f", "D")
REGRESSION_COLOUR = "#C0392B"
IMPROVEMENT_COLOUR = "#1E8449"
# Speedup and ratio ticks, roundest first: an axis labels the first ones that fit its range without crowding.
RATIO_TICKS = (1.0, 2, 0.5, 10, 0.1, 5, 0.2, 1.5, 0.75, 4, 0.25, 3, 1.25, 0.8, 1.1, 0.9, 20, 0.05, 1.05, 0.95)
PANEL_WIDTH_IN = 5.8
PANEL_HEIGHT_IN = 3.7
DPI = 100


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed; the message is the one line a user needs."""


def require_matplotlib():
    """The matplotlib.figure module, or `PlotUnavailable` saying how to install it."""
    try:
        from matplotlib import figure
    except ImportError:
        raise PlotUnavailable(f"plots need matplotlib: {INSTALL_HINT}") from None
    return figure


# ---------------------------------------------------------------------------------------------
# what is drawn (no matplotlib needed)
# ---------------------------------------------------------------------------------------------
def is_timed(case: CaseRecord) -> bool:
    """Whether a case is drawn: passed, with a median and an achieved rate."""
    return case.status == CaseStatus.PASS and bool(case.median_s) and (case.metrics or {}).get("tflops") is not None


def is_cpu_document(doc: dict) -> bool:
    clocks = {c.timing.get("clock") for c in doc.get("cases", []) if c.timing}
    return "cpu" in clocks or (doc.get("settings") or {}).get("device") == "cpu"


def baseline_kernel(doc: dict, override: str | None = None) -> str | None:
    """The kernel speedups are relative to: `override`, else the run's --baseline, else cublas-dense;
    None when that kernel has no case in the document or the override is 'none'."""
    if override is not None and override.lower() == "none":
        return None
    name = override or (doc.get("settings") or {}).get("baseline") or DEFAULT_BASELINE
    return name if any(c.kernel == name for c in doc.get("cases", [])) else None


def left_out(cases: list[CaseRecord]) -> str:
    """What a figure of these cases does not show, e.g. 'left out: 2 failed, 39 skipped'."""
    counts = Counter("passed, untimed" if c.status == CaseStatus.PASS else
                     {CaseStatus.FAIL: "failed", CaseStatus.ERROR: "errors", CaseStatus.SKIP: "skipped"}[c.status]
                     for c in cases if not is_timed(c))
    if not counts:
        return f"all {len(cases)} cases shown"
    order = ("failed", "errors", "skipped", "passed, untimed")
    return "left out: " + ", ".join(f"{counts[k]} {k}" for k in order if counts[k])


def gpu_names(doc: dict) -> dict:
    """GPU index -> model name, from the environment fingerprint."""
    return {g.get("index"): g.get("name", "?") for g in (doc.get("environment") or {}).get("gpus") or []
            if isinstance(g, dict)}


def device_of(doc: dict, case: CaseRecord) -> str:
    names = gpu_names(doc)
    if case.gpu in names:
        return names[case.gpu]
    models = sorted(set(names.values()))
    # A merged document keeps the first shard's fingerprint: its model stands for lanes it does not list.
    return models[0] if models else "CPU"


def document_title(doc: dict, path: str | None = None) -> str:
    """'NVIDIA H200 · nvidia-h200.json · commit 0cc668155169 · 2026-12-01', CPU-marked when host-timed."""
    env = doc.get("environment") or {}
    models = sorted(set(gpu_names(doc).values())) or ["CPU"]
    bits = [", ".join(models)]
    if path:
        bits.append(Path(path).name)
    commit = ((env.get("software") or {}).get("fp4bench_commit") or "")[:12]
    if commit:
        bits.append(f"commit {commit}")
    if env.get("created"):
        bits.append(str(env["created"])[:10])
    title = " · ".join(bits)
    return f"{title} — {CPU_NOTE}" if is_cpu_document(doc) else title


def _median_ceilings(found: list[Ceilings]) -> Ceilings:
    rates = sorted({k for c in found for k in c.matrix_flops_per_s})
    return Ceilings(statistics.median(c.copy_bytes_per_s for c in found),
                    {k: statistics.median(c.matrix_flops_per_s[k] for c in found if k in c.matrix_flops_per_s)
                     for k in rates}, found[0].measured_at, found[0].gpu)


def ceilings_of(doc: dict, cases: list[CaseRecord]) -> tuple[Ceilings | None, int]:
    """The measured ceilings the cases ran under and over how many GPUs: one GPU's own, or the median of
    several GPUs' (the same model measures within a few percent, and one roof per rate stays readable)."""
    stored = {str(k): v for k, v in ((doc.get("settings") or {}).get("ceilings") or {}).items()
              if isinstance(v, dict) and v.get("copy_bytes_per_s")}
    lanes = sorted({str(c.gpu) for c in cases} & set(stored))
    # A merged document has only the first shard's ceilings; they are of the same GPU model.
    lanes = lanes or sorted(stored)
    found = [Ceilings.from_dict(stored[lane]) for lane in lanes]
    if not found:
        return None, 0
    return (found[0] if len(found) == 1 else _median_ceilings(found)), len(found)


@dataclass
class Panel:
    """The cases of one format on one GPU model."""

    title: str
    device: str
    format: str
    cases: list[int]          # indices into the document's cases


def panels_of(doc: dict) -> list[Panel]:
    """One panel per format, in run order; per (GPU model, format) when a document spans several models."""
    cases = doc["cases"]
    groups: OrderedDict[tuple, list[int]] = OrderedDict()
    for i, c in enumerate(cases):
        groups.setdefault((device_of(doc, c), table_name(c)), []).append(i)
    several = len({device for device, _ in groups}) > 1
    return [Panel(f"{fmt} on {device}" if several else fmt, device, fmt, idxs)
            for (device, fmt), idxs in groups.items()]


class KernelStyles:
    """Colour and marker per kernel, fixed for a whole figure; the baseline is grey diamonds."""

    def __init__(self, kernels, baseline: str | None = None):
        self.baseline = baseline
        self.styles = {}
        others = [k for k in dict.fromkeys(kernels) if k != baseline]
        for i, k in enumerate(others):
            self.styles[k] = (KERNEL_COLOURS[i % len(KERNEL_COLOURS)], KERNEL_MARKERS[i % len(KERNEL_MARKERS)])
        if baseline in kernels:
            self.styles[baseline] = BASELINE_STYLE

    def __call__(self, kernel: str) -> tuple[str, str]:
        return self.styles[kernel]

    def kernels(self) -> list[str]:
        return list(self.styles)


def _shape_order(cases: list[CaseRecord]) -> list[str]:
    return list(dict.fromkeys(shape_label(c.shape) for c in cases))


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------
def _ratio_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round ratios to label between lo and hi: 1 first, then the roundest values, each at least 1/count of
    the axis (in log units) away from the others, so labels never collide."""
    span = math.log(hi / lo)
    ticks: list[float] = []
    for t in RATIO_TICKS:
        if lo <= t <= hi and all(abs(math.log(t / u)) >= span / count for u in ticks):
            ticks.append(t)
    return sorted(ticks)


def _ratio_axis(ax, values) -> None:
    """A log x axis over `values` and 1.0, labelled at round ratios ('0.5x', '1x', '2x')."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    values = [v for v in values if v and v > 0 and math.isfinite(v)] + [1.0]
    lo, hi = min(values) / 1.15, max(values) * 1.15
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_locator(FixedLocator(_ratio_ticks(lo, hi)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))


def draw_roofline(ax, doc: dict, panel: Panel, styles: KernelStyles) -> None:
    """Achieved TFLOP/s against FLOP per byte on log-log axes, under the memory roof and every measured
    compute roof of the panel's GPU. The roofs of the math paths the panel's kernels use are solid; the
    others are drawn faint, as what another path would allow."""
    cases = [doc["cases"][i] for i in panel.cases]
    timed = [c for c in cases if is_timed(c) and (c.sol or {}).get("bytes")]
    ceilings, n_gpus = ceilings_of(doc, cases)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(f"{panel.title}: roofline", loc="left", fontsize=11, fontweight="bold")
    ax.set_xlabel("arithmetic intensity (FLOP per byte of A, B, scales, C)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.grid(True, which="major", color="#dddddd", linewidth=0.6)
    ax.grid(True, which="minor", color="#f3f3f3", linewidth=0.4)
    if not timed:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no passed, timed case", transform=ax.transAxes, ha="center", color="#777777")
        return
    xs = [c.sol["flops"] / c.sol["bytes"] for c in timed]
    ys = [c.metrics["tflops"] for c in timed]
    x_lo, x_hi = min(xs) / 2.5, max(xs) * 2
    y_lo, y_hi = min(ys) / 2.5, max(ys) * 2
    if ceilings is not None:
        bandwidth = ceilings.copy_bytes_per_s / 1e12          # TFLOP/s per FLOP/byte
        rates = sorted(((k, v / 1e12) for k, v in ceilings.matrix_flops_per_s.items()), key=lambda kv: kv[1])
        top = max([r for _, r in rates] or [y_hi])
        # Room for every ridge point and for the roofs' labels above the highest roof.
        x_hi = max(x_hi, top / bandwidth * 3)
        y_hi = max(y_hi, top * 2.2)
        ax.plot([x_lo, top / bandwidth], [bandwidth * x_lo, top], color="#333333", linewidth=1.4, zorder=1)
        where = f"median of {n_gpus} GPUs" if n_gpus > 1 else "measured"
        # The label sits on the roof inside the axes, whichever of the two lower limits is the binding one.
        x_text = max(x_lo * 1.5, y_lo * 1.5 / bandwidth)
        ax.text(x_text, bandwidth * x_text * 1.3, f"copy {ceilings.copy_bytes_per_s / 1e12:.2f} TB/s ({where})",
                rotation=math.degrees(math.atan(bandwidth)), transform_rotates_text=True, rotation_mode="anchor",
                fontsize=8, color="#333333", ha="left", va="bottom")
        users: dict[str, list[str]] = {}
        for c in timed:
            rate = RATE_FOR_PATH.get(c.sol.get("math_path"))
            users.setdefault(rate, [])
            if c.kernel not in users[rate]:
                users[rate].append(c.kernel)
        # With several roofs in use, each is labelled with its kernels; a roof of more than two kernels as "the
        # other kernels" (a longer list runs into the memory roof).
        busiest = max(users, key=lambda rate: len(users[rate]))
        if len(users[busiest]) <= 2:
            busiest = None
        for name, tflops in rates:
            used = name in users
            label = f"{name} {tflops:.0f} TFLOP/s"
            if not used:
                label += " (no kernel here uses it)"
            elif len(users) > 1:
                label += ": " + ("the other kernels" if name == busiest else ", ".join(users[name]))
            ax.plot([tflops / bandwidth, x_hi], [tflops, tflops], zorder=1, linewidth=1.4 if used else 1.0,
                    color="#333333" if used else "#aaaaaa", linestyle="-" if used else "--")
            ax.text(x_hi / 1.08, tflops * 1.07, label, ha="right", va="bottom", fontsize=7.5,
                    color="#333333" if used else "#999999")
    else:
        ax.text(0.02, 0.97, "no measured ceilings in this run: no roofs", transform=ax.transAxes, ha="left",
                va="top", fontsize=8, color="#777777")
    for kernel in styles.kernels():
        pts = [(x, y) for c, x, y in zip(timed, xs, ys) if c.kernel == kernel]
        if pts:
            colour, marker = styles(kernel)
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=36, color=colour, marker=marker, zorder=3,
                       edgecolors="white", linewidths=0.5, alpha=0.9)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    _plain_log_ticks(ax.xaxis, x_lo, x_hi)
    _plain_log_ticks(ax.yaxis, y_lo, y_hi)
    _label_m_clusters(ax, timed, xs, x_lo, x_hi)


def _plain_log_ticks(axis, lo: float, hi: float) -> None:
    """Log-axis labels as plain numbers (0.5, 10, 1000 rather than 5x10^-1), with 2 and 5 ticks too when
    the axis spans under two decades, so that a narrow axis still has labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = (1.0, 2.0, 5.0) if math.log10(hi / lo) < 2 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _label_m_clusters(ax, timed: list[CaseRecord], xs: list[float], x_lo: float, x_hi: float) -> None:
    """'M=16' under each group of points of one M: intensity is set mostly by M, so the labels tell the
    decode-sized points from the prefill-sized ones. Labels closer than a tenth of the axis are merged."""
    by_m: dict[int, list[float]] = {}
    for c, x in zip(timed, xs):
        # A grouped case by its total M (the groups' rows together).
        by_m.setdefault(sum(c.shape.m) if c.shape.grouped else c.shape.m, []).append(x)
    groups: list[tuple[list[int], list[float]]] = []
    for m in sorted(by_m):
        x = statistics.median(by_m[m])
        if groups and math.log(x / groups[-1][1][0]) / math.log(x_hi / x_lo) < 0.1:
            groups[-1][0].append(m)
            groups[-1][1].append(x)
            continue
        groups.append(([m], [x]))
    for ms, group_xs in groups:
        ax.text(statistics.geometric_mean(group_xs), 0.02, "M=" + ",".join(map(str, ms)),
                transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=7.5, color="#555555")


def draw_speedups(ax, doc: dict, panel: Panel, styles: KernelStyles, baseline: str,
                  speed: dict[int, float]) -> None:
    """One row per shape, one dot per kernel (the baseline itself is the 1x line), and a geometric-mean row."""
    cases = doc["cases"]
    idxs = [i for i in panel.cases if is_timed(cases[i]) and i in speed and cases[i].kernel != baseline]
    # Rows in the run's order of shapes, whichever kernel ran a shape first; shapes without a dot left out.
    drawn = {shape_label(cases[i].shape) for i in idxs}
    shapes = [s for s in _shape_order([cases[i] for i in panel.cases]) if s in drawn]
    kernels = [k for k in styles.kernels() if any(cases[i].kernel == k for i in idxs)]
    ax.set_title(f"{panel.title}: speedup over {baseline}", loc="left", fontsize=11, fontweight="bold")
    if not idxs:
        ax.text(0.5, 0.5, f"no kernel timed on a shape {baseline} was timed on", transform=ax.transAxes,
                ha="center", color="#777777", fontsize=9)
        ax.set_yticks([])
        ax.set_xticks([])
        return
    rows = shapes + ["geomean"]
    spread = 0.6 / max(1, len(kernels))
    values = []
    for j, kernel in enumerate(kernels):
        colour, marker = styles(kernel)
        offset = (j - (len(kernels) - 1) / 2) * spread
        mine = [i for i in idxs if cases[i].kernel == kernel]
        ys = [shapes.index(shape_label(cases[i].shape)) + offset for i in mine]
        xs = [speed[i] for i in mine]
        gm = geometric_mean(xs)
        ax.scatter(xs, ys, s=36, color=colour, marker=marker, zorder=3, edgecolors="white", linewidths=0.5)
        ax.scatter([gm], [len(shapes) + offset], s=60, color=colour, marker=marker, zorder=3, edgecolors="black",
                   linewidths=0.8)
        ax.annotate(f"{gm:.2f}×", (gm, len(shapes) + offset), xytext=(7, 0), textcoords="offset points",
                    va="center", fontsize=8, color=colour, fontweight="bold")
        values += xs + [gm]
    _ratio_axis(ax, values)
    lo, hi = ax.get_xlim()
    ax.axvspan(1.0, hi, color="#e8f5e9", zorder=0)
    ax.axvline(1.0, color="#444444", linewidth=1.2, zorder=1)
    ax.axhline(len(shapes) - 0.5, color="#999999", linewidth=0.6)
    ax.text(hi / 1.03, -0.9, "faster →", ha="right", va="center", fontsize=8, color=IMPROVEMENT_COLOUR)
    ax.text(lo * 1.03, -0.9, "← slower", ha="left", va="center", fontsize=8, color=REGRESSION_COLOUR)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    ax.get_yticklabels()[-1].set_fontweight("bold")
    ax.set_ylim(len(rows) - 0.5, -1.4)
    ax.grid(True, axis="x", color="#dddddd", linewidth=0.6)
    for y in range(len(rows)):
        ax.axhline(y, color="#f2f2f2", linewidth=0.5, zorder=0)
    ax.set_xlabel(f"{baseline} median / kernel median (log scale)")


def _fit_width(fig, text: str, fontsize: float) -> str:
    """`text` wrapped to the figure's width (a one-panel figure is narrower than its title)."""
    # An average DejaVu Sans character is about 0.6 of the font size wide.
    chars = int(fig.get_figwidth() * 72 / (0.6 * fontsize))
    return textwrap.fill(text, chars, break_on_hyphens=False)


def _legend(fig, styles: KernelStyles, title: str, extra: list | None = None) -> None:
    """The kernels' markers under the figure's title (the legend's own title: constrained layout then keeps
    the two from overlapping)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="", marker=styles(k)[1], color=styles(k)[0], markersize=7,
                      label=f"{k} (baseline)" if k == styles.baseline else k) for k in styles.kernels()]
    handles += extra or []
    legend = fig.legend(handles=handles, loc="outside upper center", ncol=max(1, min(len(handles), 6)),
                        frameon=False, fontsize=9, alignment="center", title=_fit_width(fig, title, 12 * 1.1),
                        title_fontproperties={"size": 12, "weight": "bold"})
    legend.get_title().set_multialignment("center")


def overview_figure(doc: dict, path: str | None = None, baseline: str | None = None):
    """Per format one row: the speedup over the baseline (left, when the baseline kernel is in the run) and
    the roofline (right). The document's title and what was left out head and foot the figure."""
    figure = require_matplotlib()
    cases = doc["cases"]
    base = baseline_kernel(doc, baseline)
    speed = speedups(cases, base)
    panels = panels_of(doc)
    with_speedup = base is not None and bool(speed)
    cols = 2 if with_speedup else 1
    fig = figure.Figure(figsize=(PANEL_WIDTH_IN * cols, PANEL_HEIGHT_IN * max(1, len(panels)) + 1.3), dpi=DPI,
                        layout="constrained")
    axes = fig.subplots(max(1, len(panels)), cols, squeeze=False)
    if not panels:
        axes[0][0].set_axis_off()
        axes[0][0].text(0.5, 0.5, "no case in this document", ha="center", color="#777777")
    styles = KernelStyles([c.kernel for c in cases if is_timed(c)], base)
    for row, panel in enumerate(panels):
        # The speedup is what a kernel engineer reads first; the roofline says how much is left.
        if with_speedup:
            draw_speedups(axes[row][0], doc, panel, styles, base, speed)
        draw_roofline(axes[row][-1], doc, panel, styles)
    _legend(fig, styles, document_title(doc, path))
    notes = [f"Passed, timed cases only ({left_out(cases)})."]
    if ceilings_of(doc, cases)[0] is not None:
        notes.append("Roofs: the GPU's measured ceilings (fp4bench device --measure).")
    if with_speedup:
        notes.append("Big outlined markers: geometric mean over the shapes.")
    else:
        wanted = baseline or (doc.get("settings") or {}).get("baseline") or DEFAULT_BASELINE
        notes.append("No speedups: " + ("none asked for." if wanted.lower() == "none" else
                                        f"the baseline {wanted} was not timed in this run."))
    fig.text(0.5, 0, _fit_width(fig, " ".join(notes), 8), ha="center", va="bottom", fontsize=8, color="#555555")
    fig.get_layout_engine().set(h_pad=0.08, hspace=0.04, rect=(0, 0.02, 1, 0.98))
    return fig


def compare_figure(comparison, base_doc: dict, new_doc: dict, base_path: str = "", new_path: str = ""):
    """New/baseline median per case (one panel per format, a row per shape, a dot per kernel), each with the
    two runs' spread as a band and the threshold shaded around 1x; regressions and improvements labelled."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from .compare import IMPROVED, REGRESSION, VERDICT_ORDER

    figure = require_matplotlib()
    rows = [r for r in comparison.rows if r.ratio is not None]
    formats = list(dict.fromkeys([c.format for c in new_doc["cases"]] + [r.key[2] for r in rows]))
    formats = [f for f in formats if any(r.key[2] == f for r in rows)]
    kernel_order = [c.kernel for c in new_doc["cases"]] + [r.key[0] for r in rows]
    styles = KernelStyles([k for k in dict.fromkeys(kernel_order) if any(r.key[0] == k for r in rows)],
                          baseline_kernel(new_doc))
    shape_order = {s: i for i, s in enumerate(_shape_order(new_doc["cases"] + base_doc["cases"]))}
    cols = 2 if len(formats) > 1 else 1
    n_rows = max(1, math.ceil(len(formats) / cols))
    fig = figure.Figure(figsize=(PANEL_WIDTH_IN * cols, PANEL_HEIGHT_IN * n_rows + 1.4), dpi=DPI,
                        layout="constrained")
    axes = [ax for line in fig.subplots(n_rows, cols, squeeze=False) for ax in line]
    t = comparison.threshold
    for ax, fmt in zip(axes, formats):
        mine = [r for r in rows if r.key[2] == fmt]
        shapes = sorted({_key_shape(r.key) for r in mine}, key=lambda s: shape_order.get(s, len(shape_order)))
        kernels = [k for k in styles.kernels() if any(r.key[0] == k for r in mine)]
        spread = 0.6 / max(1, len(kernels))
        values = []
        for j, kernel in enumerate(kernels):
            colour, marker = styles(kernel)
            offset = (j - (len(kernels) - 1) / 2) * spread
            for r in (r for r in mine if r.key[0] == kernel):
                y = shapes.index(_key_shape(r.key)) + offset
                # The runs' spread in ratio units: the same sqrt(s_b^2 + s_n^2) the verdict uses.
                band = math.hypot(r.base.std_s, r.new.std_s) / r.base.median_s
                # A band wider than the ratio itself would reach zero, which a log axis cannot show.
                lo, hi = max(r.ratio - band, r.ratio / 4), r.ratio + band
                ax.plot([lo, hi], [y, y], color=colour, linewidth=2.2, alpha=0.35, solid_capstyle="butt", zorder=2)
                ax.scatter([r.ratio], [y], s=36, color=colour, marker=marker, zorder=3, edgecolors="white",
                           linewidths=0.5)
                values += [lo, hi]
                if r.verdict in (REGRESSION, IMPROVED):
                    mark = REGRESSION_COLOUR if r.verdict == REGRESSION else IMPROVEMENT_COLOUR
                    ax.scatter([r.ratio], [y], s=110, facecolors="none", edgecolors=mark, linewidths=1.4, zorder=4)
                    ax.annotate(f"{(r.ratio - 1) * 100:+.1f}%", (r.ratio, y), xytext=(7, 0),
                                textcoords="offset points", va="center", fontsize=7.5, color=mark,
                                fontweight="bold")
        _ratio_axis(ax, values + [1 + t * 1.5, 1 / (1 + t * 1.5)])
        ax.axvspan(1 / (1 + t), 1 + t, color="#eeeeee", zorder=0)
        ax.axvline(1.0, color="#444444", linewidth=1.0, zorder=1)
        lo_x, hi_x = ax.get_xlim()
        ax.text(hi_x / 1.02, -0.9, "slower →", ha="right", va="center", fontsize=8, color=REGRESSION_COLOUR)
        ax.text(lo_x * 1.02, -0.9, "← faster", ha="left", va="center", fontsize=8, color=IMPROVEMENT_COLOUR)
        ax.set_yticks(range(len(shapes)))
        ax.set_yticklabels(shapes, fontsize=8)
        ax.set_ylim(len(shapes) - 0.5, -1.4)
        ax.grid(True, axis="x", color="#dddddd", linewidth=0.6)
        ax.set_title(f"{fmt}: new / baseline median", loc="left", fontsize=11, fontweight="bold")
        ax.set_xlabel("new median / baseline median (log scale)")
    for ax in axes[len(formats):]:
        ax.set_visible(False)
    if not formats:
        axes[0].set_visible(True)
        axes[0].set_axis_off()
        axes[0].text(0.5, 0.5, "no case was timed in both runs", ha="center", color="#777777")
    counts = Counter(r.verdict for r in comparison.rows)
    shown = Counter(r.verdict for r in rows)
    hidden = ", ".join(f"{counts[v] - shown[v]} {v}" for v in VERDICT_ORDER if counts[v] - shown[v])
    summary = ", ".join(f"{counts[v]} {v}" for v in VERDICT_ORDER if counts[v])
    env_b, env_n = comparison.base_env, comparison.new_env
    title = (f"{Path(new_path).name or 'new'} against {Path(base_path).name or 'baseline'} on "
             f"{env_n.get('gpu')}: {summary}")
    if "cpu" in (env_b.get("clock") or "", env_n.get("clock") or ""):
        title += f" — {CPU_NOTE}"
    extra = [Patch(color="#eeeeee", label=f"threshold ±{t * 100:g}%"),
             Line2D([], [], color="#999999", linewidth=2.2, alpha=0.5, label="both runs' spread"),
             Line2D([], [], linestyle="", marker="o", markersize=9, markerfacecolor="none",
                    markeredgecolor=REGRESSION_COLOUR, label="regression"),
             Line2D([], [], linestyle="", marker="o", markersize=9, markerfacecolor="none",
                    markeredgecolor=IMPROVEMENT_COLOUR, label="improved")]
    _legend(fig, styles, title, extra)
    caption = (f"Cases timed in both runs ({hidden or 'none left out'}); a regression is slower by more than the "
               f"threshold and by more than both runs' spread (fp4bench compare).")
    fig.text(0.5, 0, _fit_width(fig, caption, 8), ha="center", va="bottom", fontsize=8, color="#555555")
    fig.get_layout_engine().set(h_pad=0.08, rect=(0, 0.02, 1, 0.98))
    return fig


def _key_shape(key: tuple) -> str:
    from .compare import shape_text

    return shape_text(key)


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------
def figure_bytes(fig, fmt: str = "png") -> bytes:
    """The figure encoded as PNG or SVG. SVG keeps its text as text (smaller, searchable) and carries no
    date, so the same document gives the same file."""
    buf = io.BytesIO()
    if fmt == "svg":
        from matplotlib import rc_context

        with rc_context({"svg.fonttype": "none", "svg.hashsalt": "fp4bench"}):
            fig.savefig(buf, format="svg", metadata={"Date": None})
        return buf.getvalue()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return _palette_png(buf.getvalue())


def _palette_png(png: bytes) -> bytes:
    """The PNG with 256 colours instead of RGBA: a third of the size (a README image, an HTML page) and no
    difference a reader sees on flat-coloured charts. Unchanged if Pillow (a matplotlib dependency) is absent."""
    try:
        from PIL import Image
    except ImportError:
        return png
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                                dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def write_figure(fig, path: str | Path) -> None:
    """Write the figure to `path` (.png or .svg) atomically: a reader never sees half an image."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"{path}: the image must end in {' or '.join(OUTPUT_SUFFIXES)}")
    atomic_write(p, figure_bytes(fig, suffix[1:]))
