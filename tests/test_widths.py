"""What a person reads fits a 100-column terminal: run, verify, list, compare and report on the task shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fp4bench.cli import main

REPO = Path(__file__).resolve().parents[1]
H200 = REPO / "baselines" / "nvidia-h200.json"
WIDTH = 100


def lines_of(*args) -> list[str]:
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code in (0, 1, 3), r.output
    return r.output.splitlines()


def assert_fits(lines: list[str]) -> None:
    wide = [line for line in lines if len(line) > WIDTH]
    assert not wide, f"{len(wide)} line(s) wider than {WIDTH}: {wide[:3]}"


@pytest.mark.slow
def test_run_on_the_task_shapes_fits_and_collapses_skips():
    lines = lines_of("run", "--shapes", "task", "--device", "cpu", "--isolation", "none", "--budget", "0.05",
                     "--min-samples", "3", "--no-measure-ceilings", "-q")
    assert_fits(lines)
    text = "\n".join(lines)
    assert "skipped (" in text and "needs sm_90; this machine has no GPU: sm90-nvfp4-triton (nvfp4) x22" in text
    assert "sm90-nvfp4 (nvfp4) x22" in text
    # Collapsed: far fewer lines than cases (374 cases, most of them skipped).
    assert len(lines) < 160 and "CPU times from a host clock" in text


def test_verify_list_report_and_compare_fit():
    assert_fits(lines_of("verify", "--shapes", "task", "--kernel", "sm90-*,sm1*", "--device", "cpu",
                         "--isolation", "none"))
    assert_fits(lines_of("list"))
    assert_fits(lines_of("report", H200))
    assert_fits(lines_of("report", H200, "--configs"))
    assert_fits(lines_of("compare", H200, REPO / "baselines" / "nvidia-h200-repeat.json", "--all"))


@pytest.mark.parametrize("problem", ["nvfp4_gemv", "nvfp4_dual_gemm", "nvfp4_group_gemm"])
def test_run_of_the_other_problems_fits(problem):
    """Their smoke cases timed, their benchmark cases skipped past the CPU limit (grouped labels included)."""
    lines = lines_of("run", "--problem", problem, "--group", "smoke", "--group", "benchmarks", "--device", "cpu",
                     "--isolation", "none", "--budget", "0.05", "--min-samples", "3", "--no-measure-ceilings", "-q")
    assert_fits(lines)
    text = "\n".join(lines)
    assert problem in text and "past the CPU limit" in text and " 0 failed" in text
