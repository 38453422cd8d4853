"""`fp4bench report RESULTS.json --html FILE`: one self-contained page with the environment, failures first,
the tables, skipped cases one line per reason, and the plots (a note instead when matplotlib is missing)."""

from __future__ import annotations

import html
import re
import sys

import pytest
from click.testing import CliRunner

from fp4bench.case import CaseRecord, CaseStatus
from fp4bench.cli import main
from fp4bench.formats import gemm_format
from fp4bench.html_report import environment_rows, render_html, skip_groups
from fp4bench.plot import INSTALL_HINT
from fp4bench.problem import Shape
from fp4bench.results import load_results, make_document, write_results
from fp4bench.sol import Ceilings, achieved, estimate

H200 = {"index": 0, "name": "NVIDIA H200", "driver_version": "580.65", "cuda_runtime_version": "13.0",
        "arch": "sm_90a", "sm_count": 132, "total_memory_bytes": 150 * 2**30}
CEILINGS = Ceilings(4.2e12, {"bf16": 7.9e14, "fp8": 1.45e15}, "2026-12-01T00:00:00+00:00", "NVIDIA H200")
SHAPES = (Shape(128, 7168, 16384), Shape(1, 4096, 7168))
WIDTH = 100


def passed(kernel, shape, median_us, fmt="nvfp4"):
    sol = estimate(shape, gemm_format(fmt), "fp16", CEILINGS)
    seconds = median_us * 1e-6
    return CaseRecord(kernel=kernel, format=fmt, shape=shape, status=CaseStatus.PASS, gpu=0,
                      timing={"clock": "cuda-events", "converged": True,
                              "stats": {"n": 40, "median": seconds, "mean": seconds, "std": seconds * 0.01}},
                      sol=sol.to_dict(), metrics=achieved(sol.flops, sol.bytes, seconds, sol.seconds))


def skipped(kernel, shape, reason, fmt="nvfp4"):
    return CaseRecord(kernel=kernel, format=fmt, shape=shape, status=CaseStatus.SKIP, reason=reason)


def results_file(tmp_path, name="run.json"):
    cases = [passed("sm90-nvfp4", s, us) for s, us in zip(SHAPES, (130.0, 25.0))]
    cases += [passed("cublas-dense", s, us) for s, us in zip(SHAPES, (76.0, 26.5))]
    cases.append(CaseRecord(kernel="sm90-nvfp4", format="nvfp4", shape=Shape(64, 64, 64), status=CaseStatus.FAIL,
                            gpu=0, reason="3 of 4096 elements mismatch <bad & worse>",
                            check={"passed": False, "mismatches": 3, "total": 4096, "max_abs_err": 0.5,
                                   "max_rel_err": 0.03, "first_mismatches": [[1, 2, 0]]}))
    cases += [skipped("sm100-nvfp4", s, "needs sm_100; this GPU is sm_90") for s in SHAPES]
    cases += [skipped("sm120-nvfp4", s, "needs sm_120; this GPU is sm_90") for s in SHAPES]
    cases.append(skipped("sm120-w4a8", SHAPES[0], "needs sm_120; this GPU is sm_90", fmt="w4a8"))
    env = {"created": "2026-12-01T00:38:10+00:00", "host": "gpu-box", "platform": "Linux",
           "command": "fp4bench run --shapes shapes/task.yml --kernels 'sm90-*'", "gpus": [H200],
           "software": {"fp4bench": "0.1.0", "fp4bench_commit": "0cc668155169bbbe32ddd5ed", "python": "3.12.3",
                        "torch": "2.11.0+cu130", "torch_cuda": "13.0", "triton": "3.6.0"},
           "clocks": {"start": {"0": {"sm_mhz": 1980.0, "temperature_c": 42.0}}, "end": {}}}
    settings = {"baseline": "cublas-dense", "device": "cuda", "ceilings": {"0": CEILINGS.to_dict()},
                "timing": {"timer": "fp4bench", "mode": "eager", "cold_l2": True, "target_rse": 0.005,
                           "budget_s": 1.0, "min_samples": 10}}
    path = tmp_path / name
    write_results(path, make_document(env, settings, cases))
    return path


def report(*args):
    result = CliRunner().invoke(main, ["report", *args])
    assert all(len(line) <= WIDTH for line in result.output.splitlines()), result.output
    return result


def test_page_has_environment_failures_tables_and_collapsed_skips(tmp_path):
    src, page = results_file(tmp_path), tmp_path / "page.html"
    r = report(str(src), "--html", str(page))
    assert r.exit_code == 0, r.output
    assert r.output == f"wrote {page}\n"
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and oct(page.stat().st_mode & 0o777) == "0o644"
    # the environment
    for expected in ("NVIDIA H200", "580.65", "2.11.0+cu130", "3.6.0", "0cc668155169bbbe32ddd5ed",
                     "<code>fp4bench run --shapes shapes/task.yml --kernels 'sm90-*'</code>", "2026-12-01T00:38:10",
                     "SM 1980 MHz", "copy 4.20 TB/s", "cold L2"):
        assert expected in html.unescape(text), expected
    assert "'sm90-*'" not in text                       # quotes escaped too
    # failures first, escaped
    assert text.index('id="failures"') < text.index('id="plots"') < text.index('id="tables"')
    assert "1 of 5 checked cases failed" in text and "&lt;bad &amp; worse&gt;" in text and "<bad" not in text
    # the tables per format: rows, geometric means, speedups as format_rows computes them
    assert "<h3>nvfp4 <small>speedup vs cublas-dense</small></h3>" in text
    assert "geomean (2/3)" in text and "128x7168x16384" in text and ">0.58<" in text
    # skipped cases: one line per reason, with the kernels (and formats) listed, and not in the tables
    assert "Skipped (5 cases, one line per reason)" in text
    lines = re.findall(r"<li><b>(.*?)</b>(.*?)</li>", text)
    assert lines == [("needs sm_100; this GPU is sm_90", ": sm100-nvfp4 (nvfp4) ×2"),
                     ("needs sm_120; this GPU is sm_90", " (3 cases): sm120-nvfp4 (nvfp4) ×2, sm120-w4a8 (w4a8)")]
    assert ">SKIP<" not in text and "<h3>w4a8" not in text
    # self-contained: nothing fetched from elsewhere
    assert not re.search(r"<script|<link|src=\"http|url\(", text)


def test_page_embeds_the_plots_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    page = tmp_path / "page.html"
    assert report(str(results_file(tmp_path)), "--html", str(page)).exit_code == 0
    text = page.read_text()
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', text)
    assert len(images) == 1 and len(images[0]) > 10_000
    assert INSTALL_HINT not in text


def test_page_without_matplotlib_has_tables_and_a_note(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    page = tmp_path / "page.html"
    r = report(str(results_file(tmp_path)), "--html", str(page))
    assert r.exit_code == 0, r.output
    text = page.read_text()
    assert "<img" not in text and "The plots need matplotlib" in text
    assert f"<code>{INSTALL_HINT}</code>" in html.unescape(text) and '"fp4bench[plot]"' not in text
    assert "geomean (2/3)" in text


def test_cpu_page_says_its_times_are_cpu_times(tmp_path):
    doc = load_results(results_file(tmp_path))
    doc["cases"] = [c.but(timing={**c.timing, "clock": "cpu"}) if c.timing else c for c in doc["cases"]]
    text = render_html(doc, "cpu.json", "cublas-dense", plots=False)
    assert "CPU times, not comparable with GPU times" in text and 'id="plots"' not in text


def test_html_with_markdown_prints_the_tables_too_and_bad_inputs_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = results_file(tmp_path).name
    # (markdown tables are for files and step summaries, not held to the terminal's width)
    r = CliRunner().invoke(main, ["report", src, "--html", "p.html", "--markdown"])
    assert r.exit_code == 0 and r.output.startswith("wrote p.html\n") and "| sm90-nvfp4" in r.output
    (tmp_path / "bad.json").write_text('{"schema": "something else"}')
    r = report("bad.json", "--html", "q.html")
    assert r.exit_code == 2 and r.output == "Error: bad.json: not an fp4bench results file\n"
    r = report(src, "--html", "q.html", "--baseline", "nope")
    assert r.exit_code == 2 and r.output.startswith("Error: baseline 'nope'") and r.output.count("\n") == 1
    assert not (tmp_path / "q.html").exists()


def test_environment_rows_and_skip_groups_of_a_cpu_run(tmp_path):
    doc = load_results(results_file(tmp_path))
    doc["environment"]["gpus"] = []
    rows = dict(environment_rows(doc))
    assert rows["GPU"] == "none (CPU run)" and rows["torch"] == "2.11.0+cu130 (CUDA 13.0)"
    groups = skip_groups(doc["cases"])
    assert list(groups) == ["needs sm_100; this GPU is sm_90", "needs sm_120; this GPU is sm_90"]
    assert groups["needs sm_120; this GPU is sm_90"] == {"sm120-nvfp4 (nvfp4)": 2, "sm120-w4a8 (w4a8)": 1}
