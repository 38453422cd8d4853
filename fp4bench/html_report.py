"""One self-contained HTML page of a results document (`fp4bench report RESULTS.json --html FILE`).

Constraints:
- Self-contained: inline CSS, no scripts, no external stylesheet, font or image. The plots are base64 PNGs
  inside the page, so the file can be uploaded as a CI artifact or mailed and opened offline.
- matplotlib is optional (`fp4bench.plot`): without it the page has every table and a note saying how to get
  the plots.
- Every value taken from the document is HTML-escaped: kernel names, reasons and command lines are user text.
- The tables are `fp4bench.report.format_rows`, the rows of the terminal and README tables; skipped cases are
  not in them but collapsed below into one line per reason naming the kernels.
- Order: what a reader needs first comes first: the summary and failures, the plots, the tables, the skipped
  cases, the environment. Readable on a laptop: the page is at most 1240 px wide and a table wider than the
  window scrolls inside its box.
"""

from __future__ import annotations

import base64
import html
from collections import Counter, OrderedDict
from pathlib import Path

from .case import CaseCounts, CaseRecord, CaseStatus
from .report import COLUMNS, GEOMEAN, config_text, format_rows, shape_label, table_name

CSS = """
:root { --fg: #1d2329; --muted: #5b6570; --line: #dfe3e8; --bad: #b42318; --bad-bg: #fdecea; --ok: #1e7b34;
        --ok-bg: #e9f6ec; --warn-bg: #fff6e0; --head: #f4f6f8; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
       Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 20px 24px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 22px 0 6px; }
h3 small { font-weight: normal; color: var(--muted); }
p, li { max-width: 100ch; }
.sub { color: var(--muted); margin: 0 0 12px; }
nav a { margin-right: 14px; }
.counts span { display: inline-block; padding: 2px 10px; margin: 0 6px 6px 0; border-radius: 12px;
               background: var(--head); font-weight: 600; }
.counts .bad { background: var(--bad-bg); color: var(--bad); }
.counts .ok { background: var(--ok-bg); color: var(--ok); }
.banner { padding: 8px 12px; border-radius: 6px; margin: 10px 0; }
.banner.bad { background: var(--bad-bg); color: var(--bad); font-weight: 600; }
.banner.ok { background: var(--ok-bg); color: var(--ok); }
.banner.warn { background: var(--warn-bg); }
.wrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { padding: 3px 10px; text-align: left; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { background: var(--head); position: sticky; top: 0; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.wrap-text { white-space: normal; min-width: 24ch; }
tr.first td { border-top: 2px solid #c9cfd6; }
tr.gm td { font-weight: 600; background: #fafbfc; }
td.pass { color: var(--ok); font-weight: 600; }
td.fail, td.error { color: var(--bad); font-weight: 700; }
td.skip { color: var(--muted); }
td.faster { color: var(--ok); }
td.slower { color: var(--bad); }
.env th { width: 16ch; background: none; position: static; vertical-align: top; }
.env td { white-space: normal; word-break: break-word; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
figure { margin: 8px 0; }
figure img { display: block; width: 100%; max-width: 1160px; height: auto; border: 1px solid var(--line);
             border-radius: 6px; }
figcaption, .note { color: var(--muted); font-size: 13px; }
ul.skips { padding-left: 18px; } ul.skips li { margin: 3px 0; }
details summary { cursor: pointer; color: var(--muted); }
"""


# Clock and sensor readings of the fingerprint (fp4bench.device.current_clocks), in words.
CLOCK_FACTS = {"sm_mhz": "SM {:g} MHz", "mem_mhz": "memory {:g} MHz", "temperature_c": "{:g} °C",
               "power_w": "{:.0f} W"}


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers, rows, numeric=(), row_classes=None, cell_classes=None) -> str:
    """An HTML table; `numeric` column indices are right-aligned, classes per row and per cell optional."""
    head = "".join(f'<th class="num">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cls = (row_classes or {}).get(r)
        cells = []
        for i, v in enumerate(row):
            classes = " ".join(x for x in ("num" if i in numeric else "", (cell_classes or {}).get((r, i), "")) if x)
            cells.append(f'<td class="{classes}">{_e(v)}</td>' if classes else f"<td>{_e(v)}</td>")
        body.append((f'<tr class="{cls}">' if cls else "<tr>") + "".join(cells) + "</tr>")
    return f'<div class="wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------
def environment_rows(doc: dict) -> list[tuple[str, str]]:
    """(label, value) rows: the GPUs, driver, software, commit, command, clocks, ceilings and timing settings."""
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
        rows.append((f"GPU {g.get('index', '')}".strip(), f"{g.get('name', '?')} ({', '.join(f for f in facts if f)})"))
    if not gpus:
        rows.append(("GPU", "none (CPU run)"))
    drivers = sorted({str(g.get("driver_version")) for g in gpus if g.get("driver_version")})
    runtimes = sorted({str(g.get("cuda_runtime_version")) for g in gpus if g.get("cuda_runtime_version")})
    if drivers:
        rows.append(("driver", ", ".join(drivers) + (f" (CUDA runtime {', '.join(runtimes)})" if runtimes else "")))
    torch_text = sw.get("torch") and (sw["torch"] + (f" (CUDA {sw['torch_cuda']})" if sw.get("torch_cuda") else ""))
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
            rates = ", ".join(f"{k} {v / 1e12:.0f} TFLOP/s" for k, v in (c.get("matrix_flops_per_s") or {}).items())
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


def _environment(doc: dict) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{'<code>' + _e(v) + '</code>' if k == 'command' else _e(v)}</td></tr>"
                   for k, v in environment_rows(doc))
    return f'<div class="wrap"><table class="env"><tbody>{rows}</tbody></table></div>'


def _failures(cases: list[CaseRecord]) -> str:
    bad = [c for c in cases if c.status.failing]
    checked = CaseCounts.of(cases).checked
    if not bad:
        return f'<p class="banner ok">All {checked} checked cases passed.</p>' if checked else \
            '<p class="banner warn">No case was checked.</p>'
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
    table = _table(["kernel", "format", "shape", "status", "mismatches", "max abs err", "max rel err", "detail"],
                   rows, numeric=(4, 5, 6), cell_classes=classes)
    return f'<p class="banner bad">{len(bad)} of {checked} checked cases failed.</p>' + table


def _num(v) -> str:
    return "-" if v is None or v != v else f"{v:.3g}"


def _speed_class(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        return ""
    # Within 2% is left uncoloured: run-to-run noise of one case is of that order (compare's threshold is 5%).
    return "faster" if value > 1.02 else "slower" if value < 0.98 else ""


def _tables(cases: list[CaseRecord], baseline: str | None, cpu: bool) -> str:
    checked = [c for c in cases if c.status != CaseStatus.SKIP]
    if not checked:
        return '<p class="note">No case was checked: every case was skipped.</p>'
    parts = []
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
        title = f"<h3>{_e(fmt)}"
        if baseline:
            title += f" <small>speedup vs {_e(baseline)}</small>"
        if cpu:
            title += " <small>· CPU times, not comparable with GPU times</small>"
        parts.append(title + "</h3>" + _table(headers, rows, numeric=(3, 4, 5, 6, 7), row_classes=row_classes,
                                                cell_classes=cell_classes))
    if any(c.timing and not c.converged for c in checked):
        parts.append('<p class="note">A median marked * comes from a stopping rule that gave up before its noise '
                     'target (timing.converged false in the JSON).</p>')
    return "".join(parts)


def skip_groups(cases: list[CaseRecord]) -> "OrderedDict[str, Counter]":
    """Skip reason -> Counter of 'kernel (format)': the skipped cases one line per reason."""
    groups: OrderedDict[str, Counter] = OrderedDict()
    for c in cases:
        if c.status == CaseStatus.SKIP:
            groups.setdefault(c.reason or "no reason given", Counter())[f"{c.kernel} ({table_name(c)})"] += 1
    return groups


def _skipped(cases: list[CaseRecord]) -> str:
    groups = skip_groups(cases)
    if not groups:
        return '<p class="note">No case was skipped.</p>'
    items = []
    for reason, kernels in groups.items():
        names = ", ".join(f"{k} ×{n}" if n > 1 else k for k, n in kernels.items())
        total = f" ({sum(kernels.values())} cases)" if len(kernels) > 1 else ""
        items.append(f"<li><b>{_e(reason)}</b>{total}: {_e(names)}</li>")
    return f'<ul class="skips">{"".join(items)}</ul>'


def _configs(cases: list[CaseRecord]) -> str:
    rows = [[c.kernel, table_name(c), shape_label(c.shape), config_text(c.config)]
            for c in cases if c.status != CaseStatus.SKIP and c.config]
    if not rows:
        return ""
    return ("<details><summary>Launch configurations of the checked cases</summary>"
            + _table(["kernel", "format", "shape", "configuration"], rows) + "</details>")


def _plots(doc: dict, source: str, baseline: str | None) -> str:
    from .plot import INSTALL_HINT, PlotUnavailable, figure_bytes, is_timed, overview_figure

    if not any(is_timed(c) for c in doc["cases"]):
        return '<p class="note">Nothing to plot: no case passed and was timed.</p>'
    try:
        fig = overview_figure(doc, source, baseline or "none")
    except PlotUnavailable:
        return (f'<p class="banner warn">The plots need matplotlib: <code>{_e(INSTALL_HINT)}</code>, then run '
                f'this command again. The tables below have every number.</p>')
    png = base64.b64encode(figure_bytes(fig, "png")).decode("ascii")
    alt = "Speedup over the baseline per shape and kernel, and a roofline, per format"
    speedup = f"the speedup over {baseline} per shape (left; bold: geometric mean) and " if baseline else ""
    caption = (f"Per format: {speedup}achieved TFLOP/s against arithmetic intensity under the GPU's measured "
               f"ceilings.")
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------
def render_html(doc: dict, source: str, baseline: str | None, plots: bool = True) -> str:
    """The page of `doc` (a loaded results document; `source` its path). `baseline`: the kernel speedups are
    relative to, or None. `plots=False` leaves the plots out (the tables stay)."""
    from .plot import is_cpu_document

    cases: list[CaseRecord] = doc["cases"]
    env = doc.get("environment") or {}
    sw = env.get("software") or {}
    gpus = sorted({g.get("name", "?") for g in env.get("gpus") or [] if isinstance(g, dict)}) or ["CPU"]
    cpu = is_cpu_document(doc)
    counts = CaseCounts.of(cases).counts
    badge = []
    for status, label in ((CaseStatus.PASS, "passed"), (CaseStatus.FAIL, "failed"), (CaseStatus.ERROR, "errors"),
                          (CaseStatus.SKIP, "skipped")):
        cls = "bad" if status.failing and counts[status] else "ok" if status == CaseStatus.PASS else ""
        badge.append(f'<span class="{cls}">{counts[status]} {label}</span>')
    sub = " · ".join(_e(x) for x in (Path(source).name, ", ".join(gpus), env.get("created"),
                                     f"commit {(sw.get('fp4bench_commit') or 'unknown')[:12]}") if x)
    title = f"fp4bench results: {', '.join(gpus)}"
    sections = [f"<h1>{_e(title)}</h1>", f'<p class="sub">{sub}</p>', f'<p class="counts">{"".join(badge)}</p>']
    if cpu:
        sections.append('<p class="banner warn"><b>CPU times, not comparable with GPU times</b> (a host clock; '
                        'cublas-dense is a torch CPU matmul here).</p>')
    sections.append('<nav><a href="#failures">Failures</a><a href="#plots">Plots</a><a href="#tables">Tables</a>'
                    '<a href="#skipped">Skipped</a><a href="#environment">Environment</a></nav>')
    sections.append('<h2 id="failures">Failures</h2>' + _failures(cases))
    if plots:
        sections.append('<h2 id="plots">Plots</h2>' + _plots(doc, source, baseline))
    sections.append('<h2 id="tables">Results per format</h2>' + _tables(cases, baseline, cpu) + _configs(cases))
    n_skipped = counts[CaseStatus.SKIP]
    sections.append(f'<h2 id="skipped">Skipped ({n_skipped} case{"" if n_skipped == 1 else "s"}, one line per '
                    f'reason)</h2>' + _skipped(cases))
    sections.append('<h2 id="environment">Environment</h2>' + _environment(doc))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)} ({_e(Path(source).name)})</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(sections)}</main></body></html>\n")
