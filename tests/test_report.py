"""Tables per format, geometric-mean rows, speedups, CSV, markdown."""

from __future__ import annotations

import csv
import io

import pytest

from fp4bench.case import CaseRecord, CaseStatus
from fp4bench.problem import Shape
from fp4bench.report import format_rows, geometric_mean, render_csv, render_tables, speedups


def case(kernel, fmt, m, status="pass", median=None, tflops=None, pct=None, reason=None):
    timing = None if median is None else {"stats": {"median": median, "mean": median, "std": 0.0, "min": median,
                                                    "p10": median, "p90": median, "n": 10},
                                          "clock": "cuda-events", "mode": "eager"}
    metrics = None if median is None else {"tflops": tflops, "gbps": 100.0, "pct_sol": pct}
    return CaseRecord(kernel=kernel, role="kernel", format=fmt, shape=Shape(m, 256, 512, 1, 1111),
                      status=CaseStatus(status), reason=reason, timing=timing, metrics=metrics)


CASES = [
    case("fast", "nvfp4", 128, median=1e-6, tflops=10.0, pct=50.0),
    case("fast", "nvfp4", 256, median=4e-6, tflops=40.0, pct=None),
    case("fast", "nvfp4", 512, status="fail", reason="seed 1: 3 mismatches"),
    case("base", "nvfp4", 128, median=2e-6, tflops=5.0, pct=25.0),
    case("base", "nvfp4", 256, median=2e-6, tflops=20.0, pct=12.5),
    case("base", "nvfp4", 512, median=8e-6, tflops=20.0, pct=12.5),
    case("fast", "mxfp4", 128, median=3e-6, tflops=1.0, pct=1.0),
    case("base", "mxfp4", 128, status="skip", reason="needs sm_100"),
]


def test_geometric_mean_ignores_missing_values():
    assert geometric_mean([1.0, 4.0]) == pytest.approx(2.0)
    assert geometric_mean([None, 9.0, 1.0]) == pytest.approx(3.0)
    assert geometric_mean([None]) is None and geometric_mean([]) is None


def test_speedups_against_the_baseline_on_the_same_shape():
    s = speedups(CASES, "base")
    assert s[0] == pytest.approx(2.0) and s[1] == pytest.approx(0.5)
    assert 2 not in s                   # failed: no timing
    assert s[3] == pytest.approx(1.0)
    assert 6 not in s                   # the baseline was skipped on mxfp4
    assert speedups(CASES, None) == {}


def test_rows_per_format_with_geomean_over_passed_shapes():
    tables = format_rows(CASES, "base")
    assert list(tables) == ["nvfp4", "mxfp4"]
    nv = tables["nvfp4"]
    fast_rows = [r for r in nv if r[0] == "fast"]
    assert [r[2] for r in fast_rows[:3]] == ["PASS", "PASS", "FAIL"]
    failed = fast_rows[2]
    assert failed[3:8] == ["-"] * 5 and "mismatches" in failed[8]
    gm = fast_rows[3]
    assert gm[1] == "geomean (2/3)"
    assert gm[3] == "2.00"              # sqrt(1 us * 4 us)
    assert gm[4] == "20.00"             # sqrt(10 * 40)
    assert gm[6] == "50.0"              # only one shape has a SOL
    assert gm[7] == "1.00"              # sqrt(2.0 * 0.5)
    base_gm = [r for r in nv if r[0] == "base"][-1]
    assert base_gm[3] == "3.17"         # cube root of 2 * 2 * 8
    # a kernel with one shape gets no geomean row; skipped rows keep their reason
    mx = tables["mxfp4"]
    assert [r[1] for r in mx] == ["128x256x512", "128x256x512"]
    assert mx[1][2] == "SKIP" and mx[1][8] == "needs sm_100"


def test_plain_and_markdown_rendering():
    text = render_tables(CASES, "base")
    assert "nvfp4 (speedup vs base)" in text and "geomean (2/3)" in text
    md = render_tables(CASES, None, markdown=True)
    assert "### nvfp4" in md and "| kernel" in md and "speedup vs" not in md


def test_csv_has_one_row_per_case():
    rows = list(csv.DictReader(io.StringIO(render_csv(CASES, "base"))))
    assert len(rows) == len(CASES)
    assert rows[0]["median_us"] == "1.0000" and rows[0]["speedup"] == "2" and rows[0]["pct_sol"] == "50"
    assert rows[2]["status"] == "fail" and rows[2]["median_us"] == "" and rows[2]["reason"]


def test_configurations_are_shown_compactly_within_100_columns():
    from fp4bench.report import config_text, render_configs

    cfg = {"block_n": 128, "block_k": 256, "num_warps": 8, "num_stages": 2, "max_block_m": 128, "maxnreg": None,
           "programs_per_sm": 1, "join_k": True, "pre_dequant_a": False, "split_k": 4, "block_m": 128,
           "source": "tuned"}
    assert config_text(cfg) == "[tuned] tile 128x128x256 num_warps=8 num_stages=2 join_k=True split_k=4"
    assert config_text(None) == "-" and config_text({"tile": "sm120_x", "source": "heuristic"}) == \
        "[heuristic] tile=sm120_x"
    cases = [c.but(config=cfg, tuning=({"config": {}, "median_us": 1.0},) * 3) for c in CASES]
    text = render_configs(cases)
    assert "3 timed" in text and "[tuned] tile 128x128x256" in text
    assert max(len(line) for line in text.splitlines()) <= 100
