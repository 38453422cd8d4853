"""`fp4bench plot`: a roofline and speedups of one run, the comparison of two, the missing-matplotlib and
bad-input errors (one line, exit 2), and what the figures leave out and say."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from fp4bench.case import CaseRecord, CaseStatus
from fp4bench.cli import main
from fp4bench.formats import gemm_format
from fp4bench.plot import (
    CPU_NOTE,
    INSTALL_HINT,
    _ratio_ticks,
    baseline_kernel,
    ceilings_of,
    left_out,
    panels_of,
)
from fp4bench.problem import Shape
from fp4bench.results import load_results, make_document, write_results
from fp4bench.sol import Ceilings, achieved, estimate

H200 = {"index": 0, "name": "NVIDIA H200", "driver_version": "580.65", "arch": "sm_90a", "sm_count": 132}
CEILINGS = Ceilings(4.2e12, {"bf16": 7.9e14, "fp8": 1.45e15}, "2026-12-01T00:00:00+00:00", "NVIDIA H200")
SHAPES = (Shape(128, 7168, 16384), Shape(1, 4096, 7168))
WIDTH = 100


def record(kernel, shape, median_us, fmt="nvfp4", status="pass", clock="cuda-events", path="fp16", reason=None):
    """A case as `fp4bench run` records it: sol and metrics from the project's own estimate."""
    if status != "pass":
        return CaseRecord(kernel=kernel, format=fmt, shape=shape, status=CaseStatus(status), gpu=0,
                          reason=reason or "3 of 9 elements mismatch")
    sol = estimate(shape, gemm_format(fmt), path, None if clock == "cpu" else CEILINGS)
    seconds = median_us * 1e-6
    timing = {"clock": clock, "converged": True, "stats": {"n": 40, "median": seconds, "mean": seconds,
                                                           "std": seconds * 0.01}}
    return CaseRecord(kernel=kernel, format=fmt, shape=shape, status=CaseStatus.PASS, gpu=0, timing=timing,
                      sol=sol.to_dict(), metrics=achieved(sol.flops, sol.bytes, seconds, sol.seconds))


def document(cases, cpu=False, baseline="cublas-dense"):
    env = {"created": "2026-12-01T00:00:00+00:00", "command": "fp4bench run --shapes s.yml",
           "gpus": [] if cpu else [H200],
           "software": {"fp4bench": "0.1.0", "fp4bench_commit": "0123456789abcdef", "torch": "2.11.0",
                        "triton": "3.6.0"}}
    settings = {"baseline": baseline, "device": "cpu" if cpu else "cuda",
                "ceilings": {"None": None} if cpu else {"0": CEILINGS.to_dict()}}
    return make_document(env, settings, cases)


def h200_cases(scale=1.0):
    cases = []
    for shape, (mine, base) in zip(SHAPES, ((130.0, 76.0), (25.0, 26.5))):
        cases.append(record("sm90-nvfp4", shape, mine * scale))
        cases.append(record("sm90-mxfp4-fp8", shape, mine * 0.9, fmt="mxfp4", path="fp8"))
        cases.append(record("cublas-dense", shape, base))
        cases.append(record("cublas-dense", shape, base, fmt="mxfp4", path="bf16"))
    cases.append(record("sm90-nvfp4", Shape(64, 64, 64), 1.0, status="fail"))
    cases.append(CaseRecord(kernel="sm100-nvfp4", format="nvfp4", shape=SHAPES[0], status=CaseStatus.SKIP,
                            reason="needs sm_100; this GPU is sm_90"))
    return cases


def write(tmp_path, name, doc):
    path = tmp_path / name
    write_results(path, doc)
    return str(path)


def invoke(*args):
    result = CliRunner().invoke(main, ["plot", *args])
    assert all(len(line) <= WIDTH for line in result.output.splitlines()), result.output
    return result


def test_one_document_png_and_svg(tmp_path):
    pytest.importorskip("matplotlib")
    src = write(tmp_path, "h200.json", document(h200_cases()))
    png = tmp_path / "out" / "fig.png"
    r = invoke(src, "-o", str(png))
    assert r.exit_code == 0, r.output
    assert r.output == f"wrote {png}\n"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and oct(png.stat().st_mode & 0o777) == "0o644"
    svg = tmp_path / "fig.svg"
    r = invoke(src, "-o", str(svg))
    assert r.exit_code == 0, r.output
    text = svg.read_text()
    # SVG keeps its text: the panels, the roofs, the shapes and what was left out can be read back.
    for expected in ("nvfp4: roofline", "mxfp4: speedup over cublas-dense", "bf16 790 TFLOP/s",
                     "fp8 1450 TFLOP/s: sm90-mxfp4-fp8", "128x7168x16384", "1 failed, 1 skipped", "geomean"):
        assert expected in text, expected
    assert CPU_NOTE not in text


def test_cpu_run_through_the_cli_is_marked_as_cpu_times(tmp_path):
    pytest.importorskip("matplotlib")
    shapes = tmp_path / "s.yml"
    shapes.write_text("- {m: 32, n: 48, k: 64}\n- {m: 16, n: 40, k: 128}\n")
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["run", "--shapes", str(shapes), "--device", "cpu", "--isolation", "none",
                                  "--kernels", "torch-ref,cublas-dense", "--format", "nvfp4", "--budget", "0.05",
                                  "--min-samples", "3", "--json", str(out), "-q", "--no-measure-ceilings"])
    assert r.exit_code == 0, r.output
    svg = tmp_path / "cpu.svg"
    r = invoke(str(out), "-o", str(svg))
    assert r.exit_code == 0, r.output
    text = svg.read_text()
    assert CPU_NOTE in text and "no measured ceilings in this run" in text and "all 4 cases shown" in text
    assert "measured ceilings (fp4bench device" not in text


def test_two_documents_compare_chart(tmp_path):
    pytest.importorskip("matplotlib")
    base = write(tmp_path, "base.json", document(h200_cases()))
    new = write(tmp_path, "new.json", document(h200_cases(scale=1.2)))
    svg = tmp_path / "cmp.svg"
    r = invoke(base, new, "-o", str(svg), "--threshold", "5%")
    assert r.exit_code == 0, r.output
    text = svg.read_text()
    assert "new.json against base.json on NVIDIA H200" in text
    assert "2 regression" in text and "+20.0%" in text and "threshold ±5%" in text
    # As with `fp4bench compare`, the baseline may be a folder of baselines: the one for the new run's GPU.
    stored = tmp_path / "baselines"
    write(stored, "nvidia-h200.json", document(h200_cases()))
    png = tmp_path / "cmp.png"
    assert invoke(str(stored), new, "-o", str(png)).exit_code == 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_compare_refuses_different_gpus_unless_allowed(tmp_path):
    pytest.importorskip("matplotlib")
    base = write(tmp_path, "base.json", document(h200_cases()))
    other = document(h200_cases())
    other["environment"]["gpus"] = [{**H200, "name": "NVIDIA B200"}]
    new = write(tmp_path, "new.json", other)
    r = invoke(base, new, "-o", str(tmp_path / "c.png"))
    assert r.exit_code == 2 and r.output.startswith("Error: baseline on NVIDIA H200, new run on NVIDIA B200")
    assert invoke(base, new, "-o", str(tmp_path / "c.png"), "--allow-gpu-change").exit_code == 0


def test_missing_matplotlib_is_one_line_exit_2(tmp_path, monkeypatch):
    src = write(tmp_path, "h200.json", document(h200_cases()))
    # A None entry in sys.modules makes `import matplotlib...` raise ImportError, as on a machine without it.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "fig.png"
    r = invoke(src, "-o", str(out))
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and INSTALL_HINT in r.output, r.output
    assert not out.exists()


def test_bad_inputs_are_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)     # relative paths, as a user types them
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "broken.json").write_text("{not json")
    write(tmp_path, "good.json", document(h200_cases()))
    cases = [(["other.json", "-o", "a.png"], "other.json: not an fp4bench results file"),
             (["broken.json", "-o", "a.png"], "broken.json: not JSON"),
             (["absent.json", "-o", "a.png"], "cannot read results file absent.json"),
             (["good.json", "-o", "a.jpg"], "must end in .png or .svg"),
             (["good.json", "good.json", "good.json", "-o", "a.png"], "give one"),
             (["good.json", "-o", "a.png", "--baseline", "nope"], "baseline 'nope' is not in good.json"),
             (["good.json", "good.json", "-o", "a.png", "--threshold", "5"], "ambiguous"),
             ([".", "good.json", "-o", "a.png"], "no baseline nvidia-h200.json in . for NVIDIA H200")]
    for args, message in cases:
        r = invoke(*args)
        assert r.exit_code == 2, (args, r.output)
        assert r.output.startswith("Error: ") and message in r.output and r.output.count("\n") == 1, r.output
    assert not (tmp_path / "a.png").exists()


def test_what_is_left_out_and_the_baseline(tmp_path):
    doc = load_results(write(tmp_path, "h200.json", document(h200_cases())))
    assert left_out(doc["cases"]) == "left out: 1 failed, 1 skipped"
    assert left_out([c for c in doc["cases"] if c.status == CaseStatus.PASS]) == "all 8 cases shown"
    assert baseline_kernel(doc) == "cublas-dense" and baseline_kernel(doc, "none") is None
    doc["settings"]["baseline"] = None            # a run with --baseline none: the default kernel stands in
    assert baseline_kernel(doc) == "cublas-dense"
    assert baseline_kernel(doc, "sm90-nvfp4") == "sm90-nvfp4" and baseline_kernel(doc, "absent") is None
    assert [p.title for p in panels_of(doc)] == ["nvfp4", "mxfp4"]


def test_ceilings_of_several_gpus_are_their_median(tmp_path):
    doc = load_results(write(tmp_path, "h200.json", document(h200_cases())))
    doc["settings"]["ceilings"] = {str(i): Ceilings(bw, {"bf16": 8e14}).to_dict()
                                   for i, bw in enumerate((4.0e12, 4.2e12, 4.4e12))}
    cases = [c.but(gpu=i % 3) for i, c in enumerate(doc["cases"])]
    ceilings, n = ceilings_of(doc, cases)
    assert n == 3 and ceilings.copy_bytes_per_s == pytest.approx(4.2e12)
    ceilings, n = ceilings_of(doc, [c.but(gpu=7) for c in cases])   # a merged run: lanes it does not list
    assert n == 3
    doc["settings"]["ceilings"] = {"None": None}
    assert ceilings_of(doc, cases) == (None, 0)


def test_ratio_ticks_never_crowd():
    for lo, hi in ((0.09, 1.2), (0.7, 1.7), (0.9, 1.12), (0.2, 25.0)):
        ticks = _ratio_ticks(lo, hi)
        assert 1.0 in ticks and all(lo <= t <= hi for t in ticks) and 2 <= len(ticks) <= 7
        gaps = [b / a for a, b in zip(ticks, ticks[1:])]
        assert min(gaps) ** 6 >= (hi / lo) * 0.999, (lo, hi, ticks)


def test_a_run_without_timings_still_plots_and_says_why_it_is_empty(tmp_path):
    pytest.importorskip("matplotlib")
    checked = [CaseRecord(kernel="torch-ref", format="nvfp4", shape=s, status=CaseStatus.PASS) for s in SHAPES]
    for name, cases in (("verify.json", checked), ("empty.json", [])):
        svg = tmp_path / f"{name}.svg"
        r = invoke(write(tmp_path, name, document(cases, cpu=True, baseline=None)), "-o", str(svg))
        assert r.exit_code == 0, r.output
        text = svg.read_text()
        assert ("left out: 2 passed, untimed" if cases else "no case in this document") in text
