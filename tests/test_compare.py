"""`fp4bench compare`: matching, the regression rule (threshold and spread), correctness failures, new and
missing cases, environment mismatches, markdown, exit codes, baselines; and two real CPU runs end to end."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fp4bench.case import CaseRecord, CaseStatus
from fp4bench.cli import main
from fp4bench.compare import (
    CORRECTNESS,
    IMPROVED,
    MISSING,
    NEW,
    NOISE,
    NOT_TIMED,
    REGRESSION,
    SAME,
    CompareInputError,
    baseline_path,
    compare_documents,
    gpu_slug,
    parse_threshold,
    render_markdown,
    save_baseline,
)
from fp4bench.problem import Shape
from fp4bench.results import load_results, make_document, write_results

FIXTURES = Path(__file__).parent / "fixtures"
H200 = {"name": "NVIDIA H200", "driver_version": "580.65", "index": 0}


def case(kernel="k", fmt="nvfp4", m=128, n=256, k=512, median_us=10.0, std_us=0.1, status="pass", clock="cuda"):
    timing = None
    if status == "pass":
        timing = {"clock": clock, "stats": {"n": 50, "median": median_us * 1e-6, "mean": median_us * 1e-6,
                                            "std": std_us * 1e-6, "p10": (median_us - std_us) * 1e-6,
                                            "p90": (median_us + std_us) * 1e-6},
                  "samples": [median_us * 1e-6] * 3}
    return CaseRecord(kernel=kernel, format=fmt, shape=Shape(m, n, k, 1, 1111), status=CaseStatus(status),
                      reason=None if status == "pass" else "3 of 9 elements mismatch", timing=timing)


def saved(cases, gpu=H200):
    """A document as written to a file."""
    return make_document({"gpus": [gpu] if gpu else [], "software": {"torch": "2.11"}}, {}, cases)


def doc(cases, gpu=H200):
    """A document as `load_results` returns it (cases as records)."""
    return {**saved([], gpu), "cases": list(cases)}


def squash(text: str) -> str:
    """Markdown with tabulate's column padding folded to single spaces."""
    return re.sub(r" {2,}", " ", text)


def verdicts(result):
    return {(r.key[0], r.key[3]): r.verdict for r in result.rows}


def test_same_timings_pass():
    base = doc([case("a"), case("b", median_us=50.0)])
    result = compare_documents(base, doc([case("a", median_us=10.2), case("b", median_us=49.0)]))
    assert set(verdicts(result).values()) == {SAME} and result.exit_code == 0
    assert [round(r.ratio, 3) for r in result.rows] == [1.02, 0.98]


def test_slowdown_beyond_threshold_and_spread_is_a_regression():
    result = compare_documents(doc([case(median_us=10.0)]), doc([case(median_us=11.0)]), threshold=0.05)
    (row,) = result.rows
    assert row.verdict == REGRESSION and row.ratio == pytest.approx(1.1) and "10.0% slower" in row.detail
    assert result.exit_code == 1


def test_slowdown_within_the_spread_is_not_a_regression():
    # 10% slower, but a single call varies by 2 µs in both runs: not evidence.
    result = compare_documents(doc([case(median_us=10.0, std_us=2.0)]), doc([case(median_us=11.0, std_us=2.0)]))
    assert result.rows[0].verdict == NOISE and result.exit_code == 0


def test_slowdown_under_the_threshold_is_not_a_regression():
    result = compare_documents(doc([case(median_us=10.0)]), doc([case(median_us=10.4)]), threshold=0.05)
    assert result.rows[0].verdict == SAME and result.exit_code == 0
    stricter = compare_documents(doc([case(median_us=10.0)]), doc([case(median_us=10.4)]), threshold=0.02)
    assert stricter.rows[0].verdict == REGRESSION


def test_speedup_is_reported_as_improvement():
    result = compare_documents(doc([case(median_us=10.0)]), doc([case(median_us=5.0)]))
    assert result.rows[0].verdict == IMPROVED and result.exit_code == 0


@pytest.mark.parametrize("status", ["fail", "error"])
def test_correctness_failure_fails_even_without_slowdown(status):
    result = compare_documents(doc([case("a"), case("b")]), doc([case("a"), case("b", status=status)]))
    assert verdicts(result)[("b", 128)] == CORRECTNESS and result.exit_code == 1
    assert "mismatch" in result.rows[1].detail


def test_new_and_missing_cases_warn_and_fail_only_when_strict():
    base = doc([case("a"), case("gone")])
    new = doc([case("a"), case("added"), case("untimed", status="skip")])
    base["cases"].append(case("untimed"))
    result = compare_documents(base, new)
    v = verdicts(result)
    assert v[("gone", 128)] == MISSING and v[("added", 128)] == NEW and v[("untimed", 128)] == NOT_TIMED
    assert result.exit_code == 0 and any("2 baseline case(s)" in w for w in result.warnings)
    strict = compare_documents(base, new, strict=True)
    assert strict.exit_code == 1 and strict.errors


def test_different_gpu_is_refused_unless_allowed_and_driver_warns():
    other = {**H200, "name": "NVIDIA H100 80GB HBM3"}
    with pytest.raises(CompareInputError, match="different GPUs .*--allow-gpu-change"):
        compare_documents(doc([case()]), doc([case()], gpu=other))
    result = compare_documents(doc([case()]), doc([case()], gpu=other), allow_gpu_change=True)
    assert any("GPU differs" in w and "H100" in w for w in result.warnings) and result.exit_code == 0
    newer_driver = {**H200, "driver_version": "590.10"}
    assert any("driver differs" in w for w in compare_documents(doc([case()]), doc([case()], newer_driver)).warnings)
    with pytest.raises(CompareInputError, match="not comparable"):
        compare_documents(doc([case()]), doc([case()], gpu=other), strict=True, allow_gpu_change=True)


def test_cpu_and_gpu_clocks_are_never_compared():
    result = compare_documents(doc([case(clock="cuda")]), doc([case(clock="cpu")], gpu=None), allow_gpu_change=True)
    assert result.rows[0].ratio is None and "clocks differ" in result.rows[0].detail
    assert any("clock differs" in w for w in result.warnings)


def test_no_common_case_is_unusable():
    with pytest.raises(CompareInputError, match="no case in common"):
        compare_documents(doc([case("a")]), doc([case("b")]))


def test_cases_match_by_kernel_format_and_shape():
    base = doc([case("a", fmt="nvfp4", median_us=10), case("a", fmt="mxfp4", median_us=20),
                case("a", m=256, median_us=30)])
    new = doc([case("a", fmt="mxfp4", median_us=20), case("a", m=256, median_us=30),
               case("a", fmt="nvfp4", median_us=10)])
    result = compare_documents(base, new)
    assert all(r.ratio == pytest.approx(1.0) for r in result.rows) and len(result.rows) == 3


@pytest.mark.parametrize("text, value", [("5%", 0.05), ("12.5%", 0.125), ("0.05", 0.05), ("0", 0.0)])
def test_parse_threshold(text, value):
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["5", "-1%", "fast", "nan%"])
def test_parse_threshold_refuses(text):
    with pytest.raises(CompareInputError):
        parse_threshold(text)


def test_markdown_summary_lists_every_case_worst_first():
    result = compare_documents(doc([case("a"), case("b"), case("c")]),
                               doc([case("a"), case("b", median_us=20.0), case("c", status="fail")]))
    text = render_markdown(result)
    assert text.startswith("## fp4bench compare: FAILED")
    table = [line for line in text.splitlines() if line.startswith("| a ") or line.startswith("| b ")
             or line.startswith("| c ")]
    assert [line.split("|")[1].strip() for line in table] == ["c", "b", "a"]
    assert "| 10 ± 0.1 | 20 ± 0.1 | 2.000 | 🔻 regression |" in squash(text)
    assert "1 correctness failure, 1 regression, 1 ok" in text


def test_save_baseline_drops_samples_and_names_the_file_by_gpu(tmp_path):
    path = save_baseline(saved([case()]), tmp_path)
    assert path == tmp_path / "nvidia-h200.json"
    stored = load_results(path)
    assert "samples" not in stored["cases"][0].timing and stored["cases"][0].timing["stats"]["n"] == 50
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3" and gpu_slug(None) == "cpu"
    assert baseline_path(tmp_path, doc([case()], gpu=None)).name == "cpu.json"


# ------------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(main, ["compare", *map(str, args)])


def test_cli_exit_codes_and_directory_baseline(tmp_path):
    base_dir = tmp_path / "baselines"
    save_baseline(saved([case("a"), case("b")]), base_dir)
    good, slow, broken = tmp_path / "good.json", tmp_path / "slow.json", tmp_path / "broken.json"
    write_results(good, saved([case("a"), case("b", median_us=10.1)]))
    write_results(slow, saved([case("a"), case("b", median_us=13.0)]))
    write_results(broken, saved([case("a"), case("b", status="error")]))
    r = invoke(base_dir, good)
    assert r.exit_code == 0, r.output
    assert "nvidia-h200.json" in r.output and "No regression." in r.output
    r = invoke(base_dir, slow, "--summary", tmp_path / "summary.md")
    assert r.exit_code == 1 and "regression" in r.output and "fail the comparison" in r.output
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("## fp4bench compare: FAILED") and "🔻 regression" in summary
    assert invoke(base_dir, slow, "--markdown").output == summary
    assert invoke(base_dir, slow, "--threshold", "40%").exit_code == 0
    assert invoke(base_dir, broken).exit_code == 1


def test_long_paths_keep_their_file_names_within_100_columns(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 4)
    base, new = deep / "baselines", deep / "new-results-of-tonight.json"
    save_baseline(saved([case("a")]), base)
    write_results(new, saved([case("a")]))
    r = invoke(base, new)
    assert r.exit_code == 0, r.output
    assert "nvidia-h200.json" in r.output and "new-results-of-tonight.json" in r.output
    assert max(map(len, r.output.splitlines())) <= 100


@pytest.mark.parametrize("content, message", [
    ("{not json", "not JSON"),
    ('{"cases": []}', "not an fp4bench results file"),
    ('{"schema": "fp4bench-results", "schema_version": 99, "cases": []}', "schema version 99"),
])
def test_cli_unusable_files_exit_2_with_one_line(tmp_path, content, message):
    good = tmp_path / "good.json"
    write_results(good, saved([case()]))
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    for args in ((bad, good), (good, bad)):
        r = invoke(*args)
        assert r.exit_code == 2 and message in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_cli_other_unusable_inputs(tmp_path):
    good = tmp_path / "good.json"
    write_results(good, saved([case()]))
    other_gpu = tmp_path / "other.json"
    write_results(other_gpu, saved([case()], gpu={**H200, "name": "NVIDIA H100"}))
    cases = [((tmp_path / "missing.json", good), "cannot read"),
             ((good, good, "--threshold", "5"), "ambiguous"),
             ((tmp_path, good), "no baseline nvidia-h200.json"),
             ((good, other_gpu), "different GPUs"),
             ((good, other_gpu, "--strict", "--allow-gpu-change"), "not comparable")]
    for args, message in cases:
        r = invoke(*args)
        assert r.exit_code == 2 and message in r.output, (args, r.output)
    assert invoke(good, other_gpu, "--allow-gpu-change").exit_code == 0


SHAPES = textwrap.dedent("""\
    shapes:
      - {m: 64, n: 96, k: 256, l: 2}
    """)


@pytest.fixture
def one_thread():
    # Host-clock timings on a shared 2-core machine: a multi-threaded matmul waiting on a busy core jitters
    # by a scheduler quantum (tens of ms); one thread keeps the honest runs comparable.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def real_run(tmp_path: Path, kernel: Path, name: str) -> Path:
    shapes = tmp_path / "shapes.yml"
    shapes.write_text(SHAPES)
    out = tmp_path / f"{name}.json"
    r = CliRunner().invoke(main, ["run", "--shapes", str(shapes), "--kernel", str(kernel), "--format", "nvfp4",
                                  "--device", "cpu", "--isolation", "none", "--budget", "0.3", "--min-samples", "5",
                                  "--json", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    return out


def test_compare_two_real_runs_then_a_slowed_kernel(tmp_path, one_thread):
    honest = FIXTURES / "kernels" / "correct.py"
    first = real_run(tmp_path, honest, "first")
    second = real_run(tmp_path, honest, "second")
    # Sub-millisecond host timings jitter on a shared CI machine; the slowed kernel adds 200 ms to each
    # call, far beyond any threshold, so a generous one keeps the honest pair stable.
    r = invoke(first, second, "--threshold", "200%")
    assert r.exit_code == 0, r.output
    assert "No regression." in r.output and "1 case(s): 1 ok." in r.output
    listed = invoke(first, second, "--threshold", "200%", "--all").output
    assert "correct nvfp4 64x96x256x2" in squash(listed) and max(map(len, listed.splitlines())) <= 100
    slowed = real_run(tmp_path, FIXTURES / "slowed" / "correct.py", "slowed")
    assert json.loads(slowed.read_text())["cases"][0]["kernel"] == "correct"
    r = invoke(first, slowed, "--threshold", "200%")
    assert r.exit_code == 1, r.output
    assert "regression" in r.output and "slower" in r.output
