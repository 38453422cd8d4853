"""`fp4bench run` and `fp4bench device` end to end on the CPU (no GPU needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fp4bench.cli import main
from fp4bench.results import load_results

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kernels"
FAST = ["--device", "cpu", "--budget", "0.02", "--min-samples", "3", "-q"]


@pytest.fixture
def shapes(tmp_path):
    p = tmp_path / "shapes.yml"
    p.write_text("- {m: 64, n: 128, k: 256}\n- {m: 32, n: 96, k: 512, l: 2}\n")
    return str(p)


def squash(text: str) -> str:
    """Output with the wrapping of long lines undone."""
    return " ".join(text.split())


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_run_checks_times_and_writes_json_csv(shapes, tmp_path):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    r = invoke("run", "--shapes", shapes, "--kernels", "torch-ref,cublas-dense,torch-scaled-mm",
               "--format", "mxfp4", "--isolation", "none", "--json", str(out_json), "--csv", str(out_csv), *FAST)
    assert r.exit_code == 0, r.output
    assert "mxfp4 (speedup vs cublas-dense (a torch CPU matmul here))\nCPU times from a host clock" in r.output
    assert "geomean (2/2)" in r.output
    assert "needs sm_100, sm_103, sm_120 or sm_121; this machine has no GPU" in r.output  # torch-scaled-mm skipped
    assert "4 passed, 0 failed, 0 errors, 2 skipped" in r.output
    doc = load_results(out_json)
    assert doc["settings"]["baseline"] == "cublas-dense"
    assert doc["environment"]["argv"][0]
    by_status = {}
    for c in doc["cases"]:
        by_status.setdefault(c.status, []).append(c)
    for c in by_status["pass"]:
        st = c.timing["stats"]
        assert st["n"] >= 2 and st["min"] <= st["median"] <= st["p90"] and c.timing["clock"] == "cpu"
        assert c.check["passed"] and c.metrics["tflops"] > 0 and c.metrics["pct_sol"] is None
        assert len(c.timing["samples"]) == st["n"] and "converged" in c.timing
    for c in by_status["skip"]:
        assert c.timing is None and c.reason
    assert len(out_csv.read_text().splitlines()) == 1 + len(doc["cases"])


def test_a_failing_kernel_is_shown_failed_and_untimed(shapes, tmp_path):
    out_json = tmp_path / "r.json"
    r = invoke("run", "--shapes", shapes, "--kernels", f"{FIXTURES / 'nan_writer.py'},cublas-dense",
               "--format", "nvfp4", "--isolation", "none", "--json", str(out_json), "--markdown", *FAST)
    assert r.exit_code == 1, r.output
    assert "### nvfp4" in r.output and "FAIL" in r.output
    failed = [c for c in load_results(out_json)["cases"] if c.kernel == "nan_writer"]
    assert len(failed) == 2 and all(c.status == "fail" and c.timing is None for c in failed)
    # the failed kernel gets no geometric-mean row; the baseline does
    assert "nan_writer  | geomean" not in r.output.replace("|", " | ").replace("  ", " ")
    assert "geomean (2/2)" in r.output


@pytest.mark.slow
def test_run_in_worker_processes(shapes, tmp_path):
    out_json = tmp_path / "r.json"
    r = invoke("run", "--shapes", shapes, "--kernels", "torch-ref", "--format", "nvfp4",
               "--json", str(out_json), *FAST)
    assert r.exit_code == 0, r.output
    assert [c.status for c in load_results(out_json)["cases"]] == ["pass", "pass"]


@pytest.mark.parametrize("args, message", [
    (["--kernels", "no-such-kernel"], "unknown kernel"),
    (["--format", "fp3"], "unknown format"),
    (["--gpus", "0"], "--gpus needs --device cuda"),
    (["--baseline", "nope"], "unknown kernel 'nope'"),
    (["--shapes", "/nonexistent.yml"], "cannot read shape file"),
])
def test_bad_input_is_one_line_and_exit_2(shapes, args, message):
    base = ["run", "--shapes", shapes, "--isolation", "none", *FAST]
    r = CliRunner().invoke(main, base + args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_isolation_none_refuses_several_gpus():
    from types import SimpleNamespace

    from fp4bench.commands.run import _make_executor
    from fp4bench.errors import InputError

    with pytest.raises(InputError, match="needs --isolation process"):
        _make_executor(SimpleNamespace(isolation="none", case_timeout=10.0), [0, 1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_device_without_gpu_says_so_in_one_line():
    r = CliRunner().invoke(main, ["device"])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in r.output


def test_ceilings_cache_round_trip(monkeypatch, tmp_path):
    from fp4bench import device
    from fp4bench.sol import Ceilings

    monkeypatch.setenv(device.CACHE_ENV, str(tmp_path))
    c = Ceilings(4.2e12, {"bf16": 7.9e14, "fp8": 1.5e15}, "now", "GPU X")
    path = device.save_ceilings("GPU-1234", c)
    assert path == tmp_path / "ceilings-GPU-1234.json"
    assert device.load_ceilings("GPU-1234") == c
    assert device.load_ceilings("GPU-other") is None
    path.write_text("{broken")
    assert device.load_ceilings("GPU-1234") is None


@pytest.mark.gpu
def test_device_json_on_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("FP4BENCH_CACHE_DIR", str(tmp_path))
    r = invoke("device", "--json")
    assert r.exit_code == 0
    info = json.loads(r.output)[0]
    assert info["sm_count"] > 0 and info["l2_bytes"] > 0 and info["capability"][0] >= 7


def test_cpu_run_skips_cases_past_the_gflop_limit_with_the_reason(tmp_path):
    shapes = tmp_path / "s.yml"
    shapes.write_text("- {m: 32, n: 48, k: 64}\n- {m: 64, n: 64, k: 256}\n")
    r = invoke("run", "--shapes", str(shapes), "--kernels", "torch-ref,sm90-nvfp4", "--format", "nvfp4", "--isolation", "none",
               "--device", "cpu", "--cpu-max-gflop", "0.003", *FAST)
    assert r.exit_code == 0, r.output
    # Work = GEMM FLOPs + 256 per operand element: 64x64x256 is 2.1 + 8.4 MFLOP, past 3 MFLOP: skipped and
    # said why; 32x48x64 is 0.2 + 1.3 MFLOP: timed.
    assert "GFLOP of work (the GEMM and dequantizing its operands) is past the CPU limit of 0.003" in squash(r.output)
    assert "1 passed, 0 failed, 0 errors, 3 skipped" in r.output
    # A kernel that cannot run on the CPU keeps its own reason.
    assert "needs sm_90; this machine has no GPU" in r.output
