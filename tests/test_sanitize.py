"""`fp4bench verify --sanitize`: option parsing, the one-line errors, the report parser, findings in the table
and the JSON, the logs beside the results (on the CPU, through a stand-in compute-sanitizer), and on a GPU
with the real one: planted kernels that plain verify passes and the matching tool flags."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fp4bench import sanitize
from fp4bench.case import CaseRecord, CaseSpec, CaseStatus
from fp4bench.cli import main
from fp4bench.formats import gemm_format
from fp4bench.integrity import INT_VIEW
from fp4bench.problem import Shape, generate
from fp4bench.report import WIDTH, render_checks
from fp4bench.sanitize import (
    Finding,
    PassResult,
    Sanitizer,
    apply_passes,
    locate,
    log_name,
    parse_report,
    parse_tools,
    placed_problem,
    short_kernel_name,
)

PLANTED = Path(__file__).parent / "fixtures" / "kernels"
B_BASE = 0x7F3A2C100000
B_BYTES = 32768                                     # b of 128x256x256 nvfp4: 256 rows of 128 bytes
OVERREAD_AT = B_BASE + B_BYTES + 65536

# Report texts in compute-sanitizer's format (the current "Access to ... is out of bounds" wording and the
# older "Address ... / at 0x.. in file:line:function" one), as --log-file writes them.
MEMCHECK_OVERREAD = f"""\
========= COMPUTE-SANITIZER
========= Invalid __global__ read of size 1 bytes
=========     at planted_overread+0x90 in /tmp/planted_overread.cu:5
=========     by thread (0,0,0) in block (0,0,0)
=========     Access to {OVERREAD_AT:#x} is out of bounds
=========     and is 65,536 bytes after the nearest allocation at {B_BASE:#x} of size 32,768 bytes
=========     Saved host backtrace up to driver entry point at kernel launch time
=========         Host Frame: cuLaunchKernel [0x2f1e5a] in libcuda.so.1
=========         Host Frame: _PyEval_EvalFrameDefault [0x1a0b2c] in python3.11
=========
========= Program hit CUDA_ERROR_LAUNCH_FAILED (error 719) due to "unspecified launch failure" on CUDA API call to cuCtxSynchronize.
=========     Saved host backtrace up to driver entry point at error
=========         Host Frame: cuCtxSynchronize [0x2c4a10] in libcuda.so.1
=========
========= ERROR SUMMARY: 2 errors
"""
MEMCHECK_OLD_FORMAT = """\
========= COMPUTE-SANITIZER
========= Invalid __global__ write of size 8 bytes
=========     at 0x000000c8 in /src/helper.cuh:75:void vector_projection<double>(double*, int)
=========     by thread (9,0,0) in block (0,0,0)
=========     Address 0x000370e8 is out of bounds
=========
========= ERROR SUMMARY: 1 error
"""
RACECHECK_ANALYSIS = """\
========= COMPUTE-SANITIZER
========= Error: Race reported between Write access at planted_racy_sum+0x1c0 in /tmp/planted_racy_sum.cu:7
=========     and Read access at planted_racy_sum+0x3f0 in /tmp/planted_racy_sum.cu:12 [255 hazards]
=========
========= Warning: Race reported between Write access at other_kernel+0x40 in /tmp/other.cu:3
=========     and Write access at other_kernel+0x40 in /tmp/other.cu:3 [31 hazards]
=========
========= RACECHECK SUMMARY: 2 hazards displayed (1 error, 1 warning)
"""
RACECHECK_HAZARD = """\
========= ERROR: Potential RAW hazard detected at __shared__ 0x4 in block (0, 0, 0) :
=========     Write Thread (1, 0, 0) at 0x000001c0 in /tmp/planted_racy_sum.cu:7:planted_racy_sum
=========     Read Thread (0, 0, 0) at 0x000003f0 in /tmp/planted_racy_sum.cu:12:planted_racy_sum
=========     Current Value : 1, Incoming Value : 0
=========
========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)
"""
INITCHECK_WORKSPACE = """\
========= COMPUTE-SANITIZER
========= Uninitialized __global__ memory read of size 4 bytes
=========     at planted_uninit_read+0x80 in /tmp/planted_uninit_read.cu:6
=========     by thread (0,0,0) in block (0,0,0)
=========     Address 0x7f3a2c900000
=========     Saved host backtrace up to driver entry point at kernel launch time
=========         Host Frame: cuLaunchKernel [0x2f1e5a] in libcuda.so.1
=========
========= Host API memory access error at host access to 0x7f7fcdc01200 of size 400 bytes
=========     Uninitialized access at 0x7f7fcdc01300 on access by cudaMemcpy source
=========     Saved host backtrace up to driver entry point at error
=========
========= ERROR SUMMARY: 257 errors
"""
SYNCCHECK_DIVERGENT = """\
========= COMPUTE-SANITIZER
========= Barrier error detected. Divergent thread(s) in block
=========     at void divergent_reduce<float>(const float *, float *)+0x1a0 in /tmp/div.cu:9
=========     by thread (37,0,0) in block (0,0,0)
=========
========= ERROR SUMMARY: 1 error
"""
CLEAN = "========= COMPUTE-SANITIZER\n========= ERROR SUMMARY: 0 errors\n"
API_ERROR_ONLY = """\
========= COMPUTE-SANITIZER
========= Program hit CUDA_ERROR_INVALID_CONTEXT (error 201) due to "invalid device context" on CUDA API call to cuCtxGetDevice.
=========     Saved host backtrace up to driver entry point at error
=========         Host Frame: cuCtxGetDevice [0x2c4a10] in libcuda.so.1
=========
========= ERROR SUMMARY: 1 error
"""


# ---------------------------------------------------------------------------------------------------------
# options and one-line errors
# ---------------------------------------------------------------------------------------------------------
def test_parse_tools():
    assert parse_tools(["memcheck"]) == ("memcheck",)
    assert parse_tools(["racecheck,memcheck", "racecheck", "InitCheck"]) == ("racecheck", "memcheck", "initcheck")
    with pytest.raises(ValueError, match="unknown tool 'leakcheck'; choose from memcheck, racecheck"):
        parse_tools(["leakcheck"])


def _cli_settings(monkeypatch, args):
    """The RunSettings verify builds from `args` (the run itself replaced)."""
    from fp4bench.commands import run as run_cmd

    seen = {}
    monkeypatch.setattr(run_cmd, "execute_run", lambda settings: seen.setdefault("s", settings) and 0)
    r = CliRunner().invoke(main, ["verify", *args])
    assert r.exit_code == 0, r.output
    return seen["s"]


def test_sanitize_option_takes_an_optional_repeatable_tool(monkeypatch):
    assert _cli_settings(monkeypatch, ["--sanitize"]).sanitize == ("memcheck",)
    assert _cli_settings(monkeypatch, ["--sanitize", "--kernel", "torch-ref"]).sanitize == ("memcheck",)
    assert _cli_settings(monkeypatch, ["--sanitize", "racecheck", "--sanitize"]).sanitize == ("racecheck", "memcheck")
    assert _cli_settings(monkeypatch, []).sanitize == ()
    # Only verify has it: run and tune time, the sanitized passes do not.
    assert CliRunner().invoke(main, ["run", "--sanitize"]).exit_code == 2
    assert CliRunner().invoke(main, ["tune", "--sanitize"]).exit_code == 2


def assert_one_line_error(r, *fragments):
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in r.output


def test_unknown_tool_is_an_input_error():
    r = CliRunner().invoke(main, ["verify", "--sanitize", "leakcheck", "--device", "cpu"])
    assert_one_line_error(r, "unknown tool 'leakcheck'")


def test_missing_sanitizer_says_where_it_looked(monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.setattr(sanitize, "FALLBACK_DIRS", ("$CUDA_HOME/bin", str(tmp_path / "cuda" / "bin")))
    r = CliRunner().invoke(main, ["verify", "--sanitize", "--device", "cpu", "--kernel", "torch-ref"])
    assert_one_line_error(r, "compute-sanitizer", "not found in PATH, $CUDA_HOME/bin (unset), "
                                                  f"{tmp_path / 'cuda' / 'bin'}")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "toolkit"))
    r = CliRunner().invoke(main, ["verify", "--sanitize", "--device", "cpu"])
    assert_one_line_error(r, f"{tmp_path / 'toolkit' / 'bin'}")


def test_sanitizer_found_in_cuda_home(monkeypatch, tmp_path):
    fake = _fake_sanitizer(tmp_path / "toolkit" / "bin")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "toolkit"))
    assert sanitize.find_sanitizer() == str(fake)


def test_no_gpu_is_a_one_line_error(monkeypatch, tmp_path):
    fake = _fake_sanitizer(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    r = CliRunner().invoke(main, ["verify", "--sanitize", "--device", "cpu", "--kernel", "torch-ref"])
    assert_one_line_error(r, "needs a CUDA GPU; --device cpu was asked for")
    if not torch.cuda.is_available():
        r = CliRunner().invoke(main, ["verify", "--sanitize", "racecheck", "--kernel", "torch-ref"])
        assert_one_line_error(r, "needs a CUDA GPU; this machine has no CUDA GPU")


# ---------------------------------------------------------------------------------------------------------
# the report parser and the operand an address belongs to
# ---------------------------------------------------------------------------------------------------------
def test_memcheck_overread_report():
    report = parse_report(MEMCHECK_OVERREAD, "memcheck")
    assert report.errors == 2 and report.api_errors == 1 and not report.unrecognized
    (f,) = report.findings
    assert f.kind == "Invalid __global__ read of size 1 bytes"
    assert f.kernel == "planted_overread" and f.address == OVERREAD_AT
    assert f.nearest == (B_BASE, 32768) and f.out_of_bounds and f.fatal
    ranges = {"a": [B_BASE - 0x100000, 16384], "b": [B_BASE, B_BYTES], "c": [B_BASE + 0x200000, 65536]}
    where = locate(f.address, ranges, f.nearest, f.out_of_bounds)
    assert where == "65536 bytes past the end of b"


def test_memcheck_old_format_names_the_function_after_file_and_line():
    (f,) = parse_report(MEMCHECK_OLD_FORMAT, "memcheck").findings
    assert f.kind == "Invalid __global__ write of size 8 bytes"
    assert f.kernel == "void vector_projection<double>(double*, int)"
    assert short_kernel_name(f.kernel) == "vector_projection"
    assert f.address == 0x370E8 and f.out_of_bounds and f.nearest is None
    # No allocation named: the nearest recorded operand, when it is close.
    assert locate(f.address, {"c": [0x37000, 0xE0]}, None, True) == "8 bytes past the end of c"
    assert locate(f.address, {"a": [0x37100, 64]}, None, True) == "24 bytes before the start of a"
    assert locate(f.address, {"a": [0x37100 + (4 << 20), 64]}, None, True) is None


def test_racecheck_reports_in_both_formats():
    report = parse_report(RACECHECK_ANALYSIS, "racecheck")
    assert report.errors == 1
    error, warning = report.findings
    assert error.kind == "Race reported between Write access and Read access [255 hazards]"
    assert error.kernel == "planted_racy_sum" and error.fatal and error.address is None
    assert not warning.fatal and warning.kernel == "other_kernel"
    (hazard,) = parse_report(RACECHECK_HAZARD, "racecheck").findings
    assert hazard.kind == "Potential RAW hazard at __shared__ 0x4" and hazard.kernel == "planted_racy_sum"
    assert hazard.summary() == "racecheck: Potential RAW hazard at __shared__ 0x4 in planted_racy_sum"


def test_initcheck_reports():
    report = parse_report(INITCHECK_WORKSPACE, "initcheck")
    device, host = report.findings
    assert device.kind == "Uninitialized __global__ memory read of size 4 bytes"
    assert device.kernel == "planted_uninit_read" and device.address == 0x7F3A2C900000
    assert not device.out_of_bounds
    # An uninitialized workspace next to an operand is not "past the end" of it; inside one, it is named.
    ranges = {"c": [0x7F3A2C8FF000, 4096]}
    assert locate(device.address, ranges, None, device.out_of_bounds) is None
    assert locate(0x7F3A2C8FF010, ranges, None, False) == "byte 16 of c"
    assert host.kind == "Host API memory access error" and host.kernel is None
    assert host.address == 0x7F7FCDC01200


def test_synccheck_report_and_long_kernel_names():
    (f,) = parse_report(SYNCCHECK_DIVERGENT, "synccheck").findings
    assert f.kind == "Barrier error detected. Divergent thread(s) in block"
    assert f.summary() == "synccheck: Barrier error detected. Divergent thread(s) in block in divergent_reduce"
    name = ("void cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal<cute::tuple<int, int>, "
            "cutlass::gemm::collective::CollectiveMma<(int)2>>>(T1::Params)")
    assert short_kernel_name(name) == "cutlass::device_kernel"


def test_clean_logs_and_api_errors_are_not_findings():
    clean = parse_report(CLEAN, "memcheck")
    assert clean.findings == [] and clean.errors == 0
    api = parse_report(API_ERROR_ONLY, "memcheck")
    assert api.findings == [] and api.errors == 1 and api.api_errors == 1
    # The application's own lines (no '=====' prefix) are not part of the report.
    assert parse_report("Invalid __global__ read of size 4 bytes\n" + CLEAN, "memcheck").findings == []


def test_locate_an_allocation_that_is_no_operand():
    assert locate(0x1000 + 300, {"b": [0x9000, 64]}, (0x1000, 256), True) == \
        "44 bytes past the end of an allocation of 256 bytes that is no operand"


# ---------------------------------------------------------------------------------------------------------
# findings in the record, the table and the JSON
# ---------------------------------------------------------------------------------------------------------
def _record(status=CaseStatus.PASS, reason=None):
    return CaseRecord("torch-ref", "nvfp4", Shape(128, 256, 256), status, reason=reason, seconds=0.5,
                      check={"max_abs_err": 0.0, "max_rel_err": 0.0})


def _overread_finding():
    return Finding("memcheck", "Invalid __global__ read of size 1 bytes", "planted_overread", OVERREAD_AT,
                   "65536 bytes past the end of b", nearest=(B_BASE, B_BYTES), out_of_bounds=True)


def test_a_finding_fails_a_passed_case_with_its_first_report(tmp_path):
    log = str(tmp_path / "x.memcheck.log")
    passes = [PassResult("memcheck", [_overread_finding()], log, 12.5, errors=1, exit_code=86),
              PassResult("racecheck", [], str(tmp_path / "x.racecheck.log"), 20.0, errors=0, exit_code=0)]
    r = apply_passes(_record(), passes)
    assert r.status == CaseStatus.FAIL
    assert r.reason == ("memcheck: Invalid __global__ read of size 1 bytes in planted_overread at 65536 bytes "
                        "past the end of b")
    assert [p["tool"] for p in r.sanitizer] == ["memcheck", "racecheck"]
    back = CaseRecord.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r and back.sanitizer[0]["findings"][0]["where"] == "65536 bytes past the end of b"
    text = render_checks([r])
    assert "FAIL" in text and "65536 bytes past the end of b" in text
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text


def test_a_case_that_already_failed_keeps_its_reason_and_gains_the_findings(tmp_path):
    p = PassResult("memcheck", [_overread_finding()], str(tmp_path / "l"), 1.0, errors=1)
    r = apply_passes(_record(CaseStatus.FAIL, "3 of 10 elements mismatch"), [p])
    assert r.status == CaseStatus.FAIL and r.reason == "3 of 10 elements mismatch"
    assert any("planted_overread" in f for f in r.findings)


def test_a_pass_that_could_not_run_is_an_error_and_warnings_do_not_fail(tmp_path):
    broken = PassResult("initcheck", [], str(tmp_path / "l"), 1.0, error="the sanitized worker did not run: boom")
    r = apply_passes(_record(), [broken])
    assert r.status == CaseStatus.ERROR and "initcheck: the sanitized worker did not run: boom" in r.reason
    warning = Finding("racecheck", "Race reported between Write access and Write access", "k", fatal=False)
    r = apply_passes(_record(), [PassResult("racecheck", [warning], str(tmp_path / "l"), 1.0, errors=0)])
    assert r.status == CaseStatus.PASS and "1 warning(s), not failing" in r.findings[0]


def test_log_names_and_where_they_go(tmp_path):
    spec = CaseSpec(str(PLANTED / "sanitize_overread.py"), "nvfp4", Shape(128, 256, 256, 2, 7))
    assert log_name(spec, "memcheck") == "sanitize_overread-nvfp4-128x256x256x2-seed7.memcheck.log"
    assert sanitize.log_dir_for(str(tmp_path / "out" / "results.json")) == tmp_path / "out" / "results-sanitizer"
    assert sanitize.log_dir_for(None) == Path("fp4bench-sanitizer")


def test_placed_problem_gives_every_operand_an_allocation_of_its_exact_extent():
    shape, fmt = Shape(77, 200, 96, 2), gemm_format("nvfp4")
    placed, reference = placed_problem(shape, fmt, torch.device("cpu")), generate(shape, fmt, "cpu")
    storages = set()
    for name, got, want in zip(sanitize.OPERANDS, placed.data, reference.data):
        if name == "c":
            assert torch.isnan(got).all() and got.stride() == want.stride()
            continue
        bits = INT_VIEW[want.element_size()]
        assert got.shape == want.shape and got.stride() == want.stride() and got.storage_offset() == 0
        assert torch.equal(got.view(bits), want.view(bits)), name
        extent = sum((n - 1) * s for n, s in zip(got.shape, got.stride())) + 1
        assert got.untyped_storage().nbytes() == extent * got.element_size(), name
        storages.add(got.untyped_storage().data_ptr())
    assert len(storages) == 6


def _run_worker(tmp_path, spec, env=None):
    """The sanitized worker's entry point, run as the sanitizer runs it (here without one)."""
    import pickle

    job, out = tmp_path / "job.pickle", tmp_path / "out.json"
    job.write_bytes(pickle.dumps({"sys_path": list(sys.path), "spec": spec}))
    env = {**os.environ, "PYTHONPATH": sanitize._package_parent(), **(env or {})}
    subprocess.run([sys.executable, "-m", "fp4bench.sanitize", str(job), str(out)], env=env, check=True,
                   timeout=300)
    return json.loads(out.read_text())


def test_the_worker_records_the_operands_and_calls_the_kernel_once(tmp_path):
    spec = CaseSpec(str(PLANTED / "fresh_output.py"), "nvfp4", Shape(64, 128, 256), device="cpu")
    report = _run_worker(tmp_path, spec)
    assert report["called"] and report["error"] is None and report["skipped"] is None, report
    ranges = report["ranges"]
    assert set(ranges) == set(sanitize.OPERANDS) | {sanitize.RETURNED}
    assert ranges["b"][1] == 128 * 128 and ranges["c"][1] == 64 * 128 * 2
    starts = sorted(start for start, _ in ranges.values())
    assert len(set(starts)) == len(starts)


def test_the_worker_reports_what_went_wrong_instead_of_crashing(tmp_path):
    spec = CaseSpec(str(PLANTED / "raises.py"), "nvfp4", Shape(64, 128, 256), device="cpu")
    report = _run_worker(tmp_path, spec)
    assert report["called"] is False and report["error"].startswith("ValueError: tile configuration"), report
    assert report["ranges"], report     # saved before the kernel ran
    if not torch.cuda.is_available():
        report = _run_worker(tmp_path, CaseSpec("torch-ref", "nvfp4", Shape(64, 128, 256), device="cuda"))
        assert report["called"] is False and "CUDA" in report["error"], report


# ---------------------------------------------------------------------------------------------------------
# a whole verify --sanitize, through a stand-in for compute-sanitizer (CPU)
# ---------------------------------------------------------------------------------------------------------
FAKE_SANITIZER = """\
#!{python}
# Stands in for compute-sanitizer: records its command line, writes the configured report to --log-file and
# the worker's report (as the sanitized worker would) to the last argument.
import json, os, sys
args = sys.argv[1:]
config = json.load(open(os.environ["FAKE_SANITIZER_CONFIG"]))
tool = args[args.index("--tool") + 1]
with open(os.environ["FAKE_SANITIZER_CONFIG"] + ".calls", "a") as f:
    f.write(json.dumps({{"args": args, "no_caching": os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING"),
                        "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF")}}) + "\\n")
this = config.get(tool, {{}})
open(args[args.index("--log-file") + 1], "w").write(this.get("report", ""))
if this.get("worker") is not None:
    json.dump(this["worker"], open(args[-1], "w"))
print(this.get("output", ""))
sys.exit(this.get("exit", 0))
"""


def _fake_sanitizer(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "compute-sanitizer"
    path.write_text(FAKE_SANITIZER.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


WORKER_RAN = {"ranges": {"a": [B_BASE - 0x100000, 16384], "b": [B_BASE, B_BYTES]}, "called": True,
              "error": None, "call_s": 0.01, "skipped": None}


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    """verify on the CPU with --sanitize through the stand-in (the GPU check is what is bypassed)."""
    from fp4bench.commands import run as run_cmd

    fake = _fake_sanitizer(tmp_path / "bin")
    config = tmp_path / "fake.json"
    monkeypatch.setenv("FAKE_SANITIZER_CONFIG", str(config))
    shapes = tmp_path / "one.yml"
    shapes.write_text("- {m: 128, n: 256, k: 256}\n")

    def make(settings, target):
        return Sanitizer(sanitize.parse_tools(settings.sanitize), str(fake),
                         sanitize.log_dir_for(settings.json_path), settings.case_timeout)

    monkeypatch.setattr(run_cmd, "_sanitizer", make)

    def invoke(tools: dict, *extra):
        config.write_text(json.dumps(tools))
        results = tmp_path / "out" / "results.json"
        args = ["verify", "--shapes", str(shapes), "--kernel", "torch-ref", "--device", "cpu", "--seeds", "1",
                "--isolation", "none", "--json", str(results), "-q", *extra]
        r = CliRunner().invoke(main, args)
        calls = [json.loads(x) for x in Path(str(config) + ".calls").read_text().splitlines()]
        return r, results, calls

    return invoke


def test_a_finding_fails_the_run_with_the_report_in_table_json_and_log(fake_run, monkeypatch):
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "backend:cudaMallocAsync")   # pools would hide an overread
    r, results, calls = fake_run({"memcheck": {"report": MEMCHECK_OVERREAD, "exit": 86, "worker": WORKER_RAN}},
                                 "--sanitize")
    assert r.exit_code == 1, r.output
    expected = "memcheck: Invalid __global__ read of size 1 bytes in planted_overread at 65536 bytes past the end of b"
    assert expected in " ".join(r.output.split())
    # Every line but the summary's (it names the results file, a long temporary path here) fits the width.
    assert max(len(line) for line in r.output.splitlines() if "results in" not in line) <= WIDTH, r.output
    assert "0 passed, 1 failed" in r.output and "sanitizer: 1 case(s), 1 with findings" in r.output
    doc = json.loads(results.read_text())
    assert doc["settings"]["sanitize"] == ["memcheck"]
    (case,) = doc["cases"]
    assert case["status"] == "fail" and case["reason"].startswith(expected)
    (p,) = case["sanitizer"]
    assert p["exit_code"] == 86 and p["errors"] == 2 and p["findings"][0]["kernel"] == "planted_overread"
    log = Path(p["log"])
    assert log.parent == results.parent / "results-sanitizer" and log.read_text() == MEMCHECK_OVERREAD
    (call,) = calls
    args = call["args"]
    assert call["no_caching"] == "1" and call["alloc_conf"] is None
    assert args[args.index("--tool") + 1] == "memcheck" and args[args.index("--padding") + 1] == str(1 << 20)
    assert args[args.index("--error-exitcode") + 1] == "86" and "--print-limit" in args
    assert args[-5:-2] == [sys.executable, "-m", "fp4bench.sanitize"]


def test_clean_passes_keep_the_case_passing_one_pass_per_tool(fake_run):
    tools = {t: {"report": CLEAN, "worker": WORKER_RAN} for t in ("memcheck", "racecheck")}
    r, results, calls = fake_run(tools, "--sanitize", "memcheck,racecheck")
    assert r.exit_code == 0, r.output
    by_tool = {c["args"][c["args"].index("--tool") + 1]: c["args"] for c in calls}   # side by side: any order
    assert sorted(by_tool) == ["memcheck", "racecheck"] and len(calls) == 2
    assert "--padding" not in by_tool["racecheck"]    # memcheck's option only
    (case,) = json.loads(results.read_text())["cases"]
    assert case["status"] == "pass" and [p["errors"] for p in case["sanitizer"]] == [0, 0]
    assert "sanitizer: 1 case(s), 0 with findings; memcheck" in r.output


def test_errors_of_an_unknown_kind_fail_rather_than_pass(fake_run):
    report = "========= Some future error kind in kernel k\n========= ERROR SUMMARY: 1 error\n"
    r, results, _ = fake_run({"synccheck": {"report": report, "exit": 86, "worker": WORKER_RAN}},
                             "--sanitize", "synccheck")
    assert r.exit_code == 1, r.output
    (case,) = json.loads(results.read_text())["cases"]
    assert case["reason"].startswith("synccheck: Some future error kind in kernel k")


def test_a_worker_that_dies_in_the_kernel_without_a_report_is_an_error(fake_run):
    died = {**WORKER_RAN, "called": False, "call_s": None}
    r, results, _ = fake_run({"memcheck": {"report": CLEAN, "worker": died, "exit": -11}}, "--sanitize")
    assert r.exit_code == 1, r.output
    (case,) = json.loads(results.read_text())["cases"]
    assert case["status"] == "error" and "died while the kernel ran" in case["reason"], case["reason"]


def test_a_sanitizer_that_cannot_start_the_worker_is_an_error(fake_run):
    r, results, _ = fake_run({"memcheck": {"output": "========= Error: unrecognized option '--padding'",
                                           "exit": 1}}, "--sanitize")
    assert r.exit_code == 1, r.output
    (case,) = json.loads(results.read_text())["cases"]
    assert case["status"] == "error" and "unrecognized option '--padding'" in case["reason"]


# ---------------------------------------------------------------------------------------------------------
# on a GPU, with the real compute-sanitizer: planted kernels
# ---------------------------------------------------------------------------------------------------------
def _need_sanitizer():
    try:
        sanitize.find_sanitizer()
    except sanitize.SanitizerMissing as e:
        pytest.skip(str(e))
    pytest.importorskip("cuda.bindings")


SMOKE_SHAPE = "- {m: 128, n: 256, k: 256}\n"


def _verify(tmp_path, name, *args):
    shapes = tmp_path / "shape.yml"
    shapes.write_text(SMOKE_SHAPE)
    results = tmp_path / f"{name}.json"
    r = CliRunner().invoke(main, ["verify", "--shapes", str(shapes), "--device", "cuda", "--seeds", "1", "-q",
                                  "--json", str(results), *args])
    cases = json.loads(results.read_text())["cases"] if results.exists() else []
    return r, {f"{c['kernel']}" + ("" if c["format"] == "nvfp4" else f" {c['format']}"): c for c in cases}


# planted submission -> (the tool that must flag it, the report's kind, the kernel it names, where it hit)
PLANTED_BUGS = {
    "sanitize_overread": ("memcheck", "Invalid __global__ read of size 1 bytes", "planted_overread",
                          "65536 bytes past the end of b"),
    "sanitize_race": ("racecheck", "Race reported between", "planted_racy_sum", None),
    "sanitize_uninit": ("initcheck", "Uninitialized __global__ memory read of size 4 bytes", "planted_uninit_read",
                        None),
}
# Honest submissions: the exact product written into c, and a fresh torch.empty output fully written (what
# initcheck must not flag).
HONEST = ("correct", "fresh_output")


@pytest.mark.gpu
def test_planted_kernels_pass_plain_checks_and_the_matching_tool_flags_each(tmp_path):
    """One verify of the planted and the honest submissions under memcheck, racecheck and initcheck."""
    _need_sanitizer()
    kernels = [*PLANTED_BUGS, *HONEST]
    r, cases = _verify(tmp_path, "planted", *[a for k in kernels for a in ("--kernel", str(PLANTED / f"{k}.py"))],
                       "--sanitize", "memcheck,racecheck,initcheck")
    assert r.exit_code == 1, r.output
    for name, (tool, kind, kernel, where) in PLANTED_BUGS.items():
        case = cases[name]
        # The values passed the plain check (that is the point); the sanitizer alone fails the case.
        assert case["check"]["passed"] and case["status"] == "fail", case
        findings = [f for p in case["sanitizer"] if p["tool"] == tool for f in p["findings"] if f["kernel"] == kernel]
        assert findings, case["sanitizer"]
        assert findings[0]["kind"].startswith(kind) and findings[0]["fatal"], findings[0]
        if where:
            assert findings[0]["where"] == where, findings[0]
        if tool == "racecheck":   # a store of one thread and a load of another, in whichever order it saw them
            assert "Write access" in findings[0]["kind"] and "Read access" in findings[0]["kind"], findings[0]
        assert all(Path(p["log"]).is_file() for p in case["sanitizer"])
    for name in HONEST:
        assert cases[name]["status"] == "pass", cases[name]
        assert sorted(p["tool"] for p in cases[name]["sanitizer"]) == ["initcheck", "memcheck", "racecheck"]


@pytest.mark.gpu
@pytest.mark.slow
def test_shipped_kernels_pass_memcheck_and_racecheck(tmp_path):
    """The Hopper and portable Triton kernels on one small shape; the full sweep (shapes verify and task) is
    `fp4bench verify --shapes verify --kernel 'sm90-*,triton-fp4' --format all --sanitize memcheck,racecheck`."""
    _need_sanitizer()
    r, cases = _verify(tmp_path, "shipped", "--kernel", "sm90-*,triton-fp4", "--format", "nvfp4,mxfp4,w4a16-nvfp4",
                       "--sanitize", "memcheck,racecheck")
    if r.exit_code == 3:
        pytest.skip("no shipped kernel runs on this GPU")
    failing = {k: c["reason"] for k, c in cases.items() if c["status"] in ("fail", "error")}
    assert r.exit_code == 0 and not failing, (failing, r.output)
