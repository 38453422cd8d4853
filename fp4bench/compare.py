"""Regression comparison of two results documents (fp4bench.results), and stored baselines.

Cases match by their key (`CaseRecord.key`: kernel, problem kind, format, M, N, K, L, seed). For a case timed in both runs, ratio = new median / baseline
median. It is a regression only when both hold:
  * the slowdown exceeds the threshold: ratio > 1 + threshold, and
  * the difference exceeds the two runs' spreads: new median - baseline median > sqrt(s_b^2 + s_n^2), with
    s the recorded standard deviation of one sample (per-call jitter). A shift smaller than the jitter
    of a single call is not evidence of a slower kernel, whatever its ratio.
The mirror image is reported as an improvement. Also reported:
  * a correctness failure: a case that failed or errored in the new run (always fails the comparison),
  * new cases (only in the new run) and missing cases (only in the baseline, or not timed in the new run),
  * a different GPU model: the comparison is refused (exit 2) unless `allow_gpu_change`, since every case
    would differ for that reason alone;
  * a different driver or clock source (a CPU run compared with a GPU run): a warning; with `strict` the
    comparison is refused (unusable input, exit 2) and missing cases fail it;
  * a regression whose launch configuration differs between the runs says so (configuration change).
Exit codes: 0 no regression, 1 regression or correctness failure, 2 unusable input (see fp4bench.errors).

Baselines are results documents stored as `baselines/<gpu>.json`, <gpu> being the GPU's name in lower
case with runs of other characters turned into '-' ("nvidia-h200", "cpu" for CPU runs). Raw samples are
dropped from them: the statistics are what a comparison reads.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from .arch import gpu_slug
from .case import CaseRecord, CaseStatus
from .errors import EXIT_FAILED, EXIT_OK
from .problem import GEMM, KIND_SPECS, Shape
from .results import ResultsFileError, load_results, write_results

DEFAULT_THRESHOLD = 0.05

# Verdicts, in the order a summary lists them.
REGRESSION = "regression"
CORRECTNESS = "correctness failure"
MISSING = "missing"
NOT_TIMED = "not timed"
IMPROVED = "improved"
SAME = "ok"
NOISE = "within noise"
NEW = "new"
SKIPPED = "skipped"
VERDICT_ORDER = (CORRECTNESS, REGRESSION, MISSING, NOT_TIMED, IMPROVED, NOISE, SAME, NEW, SKIPPED)
VERDICT_MARK = {CORRECTNESS: "❌", REGRESSION: "🔻", MISSING: "⚠️", NOT_TIMED: "⚠️", IMPROVED: "🔺"}


class CompareInputError(ValueError):
    """An input that makes the comparison meaningless; the CLI turns it into exit code 2."""


def parse_threshold(text: str) -> float:
    """'5%' or a fraction such as '0.05' -> 0.05. A bare number of 1 or more is refused as ambiguous."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise CompareInputError(f"threshold {text!r}: expected a percentage like 5% or a fraction like 0.05") from None
    if not math.isfinite(value) or value < 0:
        raise CompareInputError(f"threshold {text!r} must be a non-negative number")
    if not raw.endswith("%") and value >= 1:
        raise CompareInputError(f"threshold {text!r} is ambiguous: write {raw}% or a fraction below 1")
    return value


def environment_summary(doc: dict) -> dict:
    """GPU names, driver versions and the clock of a results document, for matching two runs."""
    env = doc.get("environment") or {}
    gpus = env.get("gpus") or []
    names = sorted({g.get("name", "?") for g in gpus if isinstance(g, dict)})
    drivers = sorted({str(g.get("driver_version")) for g in gpus if isinstance(g, dict) and g.get("driver_version")})
    clocks = sorted({c.timing.get("clock") for c in doc.get("cases", []) if c.timing} - {None})
    software = env.get("software") or {}
    return {"gpu": ", ".join(names) or "CPU", "driver": ", ".join(drivers) or None, "clock": ", ".join(clocks) or None,
            "commit": software.get("fp4bench_commit"), "torch": software.get("torch"), "created": env.get("created")}


def baseline_path(directory: str | Path, doc: dict) -> Path:
    """Where the baseline for the GPU (and problem) of `doc` lives in `directory`: <gpu>.json for the GEMM,
    <gpu>-<problem>.json for the competition's other problems (e.g. nvidia-h200-nvfp4_gemv.json)."""
    names = sorted({g.get("name") for g in (doc.get("environment") or {}).get("gpus") or [] if isinstance(g, dict)})
    kind = (doc.get("settings") or {}).get("problem") or GEMM
    suffix = "" if kind == GEMM else f"-{KIND_SPECS[kind].competition}"
    return Path(directory) / f"{gpu_slug(names[0] if names else None)}{suffix}.json"


def save_baseline(doc: dict, directory: str | Path = "baselines") -> Path:
    """Store `doc` (a document from `results.make_document`; raw samples dropped) as the baseline for its GPU."""
    slim = copy.deepcopy(doc)
    for case in slim.get("cases", []):
        if isinstance(case.get("timing"), dict):
            case["timing"].pop("samples", None)
    path = baseline_path(directory, slim)
    write_results(path, slim)
    return path


def load_document(path: str | Path, role: str, for_doc: dict | None = None) -> tuple[dict, Path]:
    """A results document; a directory means the baseline in it for `for_doc`'s GPU."""
    p = Path(path)
    if p.is_dir():
        if for_doc is None:
            raise CompareInputError(f"{role} {path} is a directory, not a results file")
        candidate = baseline_path(p, for_doc)
        if not candidate.is_file():
            have = ", ".join(sorted(f.name for f in p.glob("*.json"))) or "none"
            raise CompareInputError(f"no baseline {candidate.name} in {path} for GPU "
                                    f"{environment_summary(for_doc)['gpu']} (present: {have})")
        p = candidate
    try:
        doc = load_results(p)
    except ResultsFileError as e:
        raise CompareInputError(f"{role}: {e}") from None
    return doc, p


def shape_text(key: tuple) -> str:
    """The shape of a case key (kernel, problem, format, m, n, k, l, seed) as 'MxNxK[xL]' (a grouped case:
    'g8 M1024 N4096 K7168')."""
    return str(Shape(*key[3:7]))


def format_text(key: tuple) -> str:
    """The format of a case key, with the problem kind when it is not the GEMM ('nvfp4 gemv')."""
    return key[2] if key[1] == GEMM else f"{key[2]} {key[1]}"


@dataclass
class Timing:
    median_s: float
    std_s: float
    n: int
    clock: str | None

    @classmethod
    def of(cls, case: CaseRecord) -> "Timing | None":
        timing = case.timing if case.status == CaseStatus.PASS else None
        stats = (timing or {}).get("stats") or {}
        median = stats.get("median")
        if not isinstance(median, (int, float)) or not median > 0:
            return None
        std = stats.get("std")
        if not isinstance(std, (int, float)) or not math.isfinite(std):
            # Without a recorded std, the 10-90% range of a normal sample spans 2.56 standard deviations.
            p10, p90 = stats.get("p10"), stats.get("p90")
            std = (p90 - p10) / 2.56 if isinstance(p10, (int, float)) and isinstance(p90, (int, float)) else 0.0
        return cls(float(median), float(std), int(stats.get("n") or 0), timing.get("clock"))


@dataclass
class Row:
    key: tuple
    verdict: str
    base: Timing | None = None
    new: Timing | None = None
    ratio: float | None = None
    detail: str = ""


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)   # strict-mode failures that are not regressions
    threshold: float = DEFAULT_THRESHOLD
    base_env: dict = field(default_factory=dict)
    new_env: dict = field(default_factory=dict)
    base_path: str = ""
    new_path: str = ""

    def count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.rows)

    @property
    def exit_code(self) -> int:
        if self.count(REGRESSION) or self.count(CORRECTNESS) or self.errors:
            return EXIT_FAILED
        return EXIT_OK


def judge(base: Timing, new: Timing, threshold: float) -> tuple[str, float, str]:
    """(verdict, ratio, detail) for one case timed in both runs."""
    ratio = new.median_s / base.median_s
    noise = math.hypot(base.std_s, new.std_s)
    delta = new.median_s - base.median_s
    beyond_noise = abs(delta) > noise
    if ratio > 1 + threshold:
        if beyond_noise:
            return REGRESSION, ratio, f"{(ratio - 1) * 100:.1f}% slower"
        return NOISE, ratio, f"{(ratio - 1) * 100:.1f}% slower, within the runs' spread (±{noise * 1e6:.3g} µs)"
    if ratio < 1 / (1 + threshold) and beyond_noise:
        return IMPROVED, ratio, f"{(1 / ratio - 1) * 100:.1f}% faster"
    return SAME, ratio, ""


def compare_documents(base_doc: dict, new_doc: dict, threshold: float = DEFAULT_THRESHOLD,
                      strict: bool = False, allow_gpu_change: bool = False) -> Comparison:
    """Match and judge every case; raises CompareInputError when the comparison is meaningless."""
    result = Comparison(threshold=threshold, base_env=environment_summary(base_doc),
                        new_env=environment_summary(new_doc))
    if result.base_env["gpu"] != result.new_env["gpu"] and not allow_gpu_change:
        raise CompareInputError(f"the runs are on different GPUs (baseline {result.base_env['gpu']}, new "
                                f"{result.new_env['gpu']}): every case would differ; --allow-gpu-change to compare")
    mismatches = [f"{what} differs: baseline {result.base_env[key]}, new {result.new_env[key]}"
                  for key, what in (("gpu", "GPU"), ("driver", "driver"), ("clock", "clock"))
                  if result.base_env[key] != result.new_env[key]]
    if mismatches and strict:
        raise CompareInputError("runs are not comparable (--strict): " + "; ".join(mismatches))
    result.warnings.extend(mismatches)

    base = _index(base_doc, "baseline")
    new = _index(new_doc, "new run")
    if not set(base) & set(new):
        raise CompareInputError("the two runs have no case in common (kernel, format and shape)")
    for key in sorted(set(base) | set(new)):
        b, n = base.get(key), new.get(key)
        result.rows.append(_row(key, b, n, threshold))
    missing = result.count(MISSING) + result.count(NOT_TIMED)
    if missing:
        message = f"{missing} baseline case(s) were not timed in the new run"
        (result.errors if strict else result.warnings).append(message)
    return result


def _index(doc: dict, role: str) -> dict[tuple, CaseRecord]:
    # A repeated case (a resumed run): the later record wins.
    return {case.key: case for case in doc["cases"]}


def _config_change(b: CaseRecord, n: CaseRecord) -> str:
    """'; configuration changed: ...' when the two runs launched the case differently, else ''."""
    if not b.config or not n.config or b.config == n.config:
        return ""
    changed = sorted(k for k in set(b.config) | set(n.config) if b.config.get(k) != n.config.get(k))
    parts = [f"{k} {b.config.get(k)}->{n.config.get(k)}" for k in changed]
    return "; configuration changed: " + ", ".join(parts)


def _row(key: tuple, b: CaseRecord | None, n: CaseRecord | None, threshold: float) -> Row:
    if n is None:
        return Row(key, MISSING, Timing.of(b), detail="only in the baseline")
    if n.status.failing:
        return Row(key, CORRECTNESS, Timing.of(b) if b else None, detail=f"{n.status}: {n.reason or ''}")
    if b is None:
        return Row(key, NEW, new=Timing.of(n), detail="only in the new run")
    tb, tn = Timing.of(b), Timing.of(n)
    if tb is None and tn is None:
        return Row(key, SKIPPED, detail=n.reason or b.reason or "")
    if tn is None:
        return Row(key, NOT_TIMED, tb, detail=f"{n.status} in the new run: {n.reason or ''}")
    if tb is None:
        return Row(key, NEW, new=tn, detail=f"not timed in the baseline ({b.status})")
    if tb.clock != tn.clock:
        return Row(key, SKIPPED, tb, tn, detail=f"clocks differ ({tb.clock} vs {tn.clock}): not comparable")
    verdict, ratio, detail = judge(tb, tn, threshold)
    if verdict == REGRESSION:
        detail += _config_change(b, n)
    return Row(key, verdict, tb, tn, ratio, detail)


def _us(t: Timing | None) -> str:
    if t is None:
        return "-"
    return f"{t.median_s * 1e6:.4g} ± {t.std_s * 1e6:.2g}"


def _median_us(t: Timing | None) -> str:
    return "-" if t is None else f"{t.median_s * 1e6:.4g}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _ordered(c: Comparison, show_all: bool) -> list[Row]:
    """Rows worst first; the unremarkable ones (ok, within noise, skipped) only with `show_all`."""
    order = {v: i for i, v in enumerate(VERDICT_ORDER)}
    quiet = (SAME, NOISE, SKIPPED)
    return [r for r in sorted(c.rows, key=lambda r: (order[r.verdict], r.key)) if show_all or r.verdict not in quiet]


def _summary_line(c: Comparison) -> str:
    bad = c.count(REGRESSION) + c.count(CORRECTNESS)
    counts = ", ".join(f"{c.count(v)} {v}" for v in VERDICT_ORDER if c.count(v))
    return f"{len(c.rows)} case(s): {counts}. " + (
        f"{bad} case(s) fail the comparison." if bad else "No regression." if not c.errors else "")


def _tail(path, limit: int) -> str:
    """`path` within `limit` characters; a long one loses its head, not its file name, instead of wrapping."""
    text = str(path or "-")
    return text if len(text) <= limit else "…" + text[len(text) - limit + 1:]


def render_text(c: Comparison, show_all: bool = False, width: int = 100) -> str:
    """The comparison for a terminal or a CI log, within `width` columns: the environments, every case that
    needs a look (all with `show_all`) worst first, the reasons below the table, and a summary line."""
    import textwrap

    title = "FAILED" if c.exit_code != EXIT_OK else "OK"
    lines = [f"fp4bench compare: {title} (threshold {c.threshold * 100:g}% and beyond both runs' spread)"]
    column = (width - 12) // 2
    env_rows = ([["file", _tail(c.base_path, column), _tail(c.new_path, column)]]
                if (c.base_path or c.new_path) else [])
    env_rows += [[key, c.base_env.get(key) or "-", c.new_env.get(key) or "-"]
                 for key in ("gpu", "driver", "clock", "torch", "commit", "created")]
    lines += ["", tabulate(env_rows, headers=["", "baseline", "new"], disable_numparse=True,
                           maxcolwidths=[None, column, column])]
    notes = [f"warning: {w}" for w in c.warnings] + [f"error: {e}" for e in c.errors]
    rows, details = [], []
    for r in _ordered(c, show_all):
        rows.append([r.key[0], format_text(r.key), shape_text(r.key), _median_us(r.base), _median_us(r.new),
                     "-" if r.ratio is None else f"{r.ratio:.3f}", r.verdict])
        if r.detail:
            details.append(f"{r.key[0]} {format_text(r.key)} {shape_text(r.key)}: {r.detail}")
    if rows:
        lines += ["", tabulate(rows, headers=["kernel", "format", "shape", "base µs", "new µs", "ratio", "verdict"],
                               disable_numparse=True, colalign=("left", "left", "left", "right", "right", "right",
                                                                "left"))]
    lines += [""] * bool(details or notes)
    lines += [textwrap.fill(text, width, subsequent_indent="    ") for text in notes + details]
    lines += ["", _summary_line(c)]
    return "\n".join(lines).rstrip() + "\n"


def render_markdown(c: Comparison, show_all: bool = True) -> str:
    """A summary for a CI log or a GitHub step summary (rendered there, so not held to a terminal's width)."""
    title = "FAILED" if c.exit_code != EXIT_OK else "OK"
    lines = [f"## fp4bench compare: {title}", "",
             f"Threshold {c.threshold * 100:g}% (and beyond both runs' spread).", ""]
    env_rows = [["file", _cell(c.base_path), _cell(c.new_path)]] if (c.base_path or c.new_path) else []
    env_rows += [[key, _cell(c.base_env.get(key) or "-"), _cell(c.new_env.get(key) or "-")]
                 for key in ("gpu", "driver", "clock", "torch", "commit", "created")]
    lines += [tabulate(env_rows, headers=["", "baseline", "new"], tablefmt="github", disable_numparse=True), ""]
    lines += [f"> **warning:** {_cell(w)}" for w in c.warnings]
    lines += [f"> **error:** {_cell(e)}" for e in c.errors]
    if c.warnings or c.errors:
        lines.append("")
    rows = [[_cell(r.key[0]), format_text(r.key), shape_text(r.key), _us(r.base), _us(r.new),
             "-" if r.ratio is None else f"{r.ratio:.3f}",
             f"{VERDICT_MARK.get(r.verdict, '')} {r.verdict}".strip(), _cell(r.detail)]
            for r in _ordered(c, show_all)]
    lines += [tabulate(rows, headers=["kernel", "format", "shape", "baseline µs", "new µs", "new/baseline",
                                      "verdict", "detail"], tablefmt="github", disable_numparse=True,
                       colalign=("left", "left", "left", "right", "right", "right", "left", "left")), ""]
    lines.append(f"**{_summary_line(c).replace('. ', '.** ', 1)}")
    return "\n".join(lines).rstrip() + "\n"
