"""Worker-process isolation: crashes, aborts, hangs and raised exceptions come back as results with a
reason, the worker is replaced, and the other kernels' results survive. Workers are shared within this
module because each start imports torch (seconds on a 2-core CI machine)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fp4bench.case import CaseSpec, CaseStatus
from fp4bench.cli import main
from fp4bench.isolation import STATUS_CRASHED, STATUS_OK, STATUS_TIMEOUT, Worker, describe_exit
from fp4bench.pipeline import run_case
from fp4bench.problem import Shape
from fp4bench.runner import pin_env

PLANTED = Path(__file__).parent / "fixtures" / "kernels"
SHAPE = Shape(64, 96, 256, 1, seed=21)
SEEDS = [21, 63]


@pytest.fixture(scope="module")
def worker():
    w = Worker(timeout_s=120.0)
    yield w
    w.close()


def verify_planted(worker: Worker, name: str, device: str = "cpu", timeout_s: float | None = None):
    spec = CaseSpec(str(PLANTED / f"{name}.py"), "nvfp4", SHAPE, device=device, check_seeds=len(SEEDS))
    return worker.call(run_case, spec, timeout_s=timeout_s)


def test_a_run_survives_every_kind_of_crash(worker):
    """Interleave planted crashing kernels with an honest one: each is reported, the honest one always passes."""
    expected = [
        ("correct", STATUS_OK, None),
        ("segfault", STATUS_CRASHED, "worker died: signal 11 (SIGSEGV)"),
        ("correct", STATUS_OK, None),
        ("abort", STATUS_CRASHED, "worker died: signal 6 (SIGABRT)"),
        ("sleep_forever", STATUS_TIMEOUT, "no result after 1.5 s"),
        ("correct", STATUS_OK, None),
    ]
    pids = []
    for name, status, reason in expected:
        result = verify_planted(worker, name, timeout_s=1.5 if name == "sleep_forever" else None)
        assert result.status == status, (name, result)
        if reason:
            assert reason in result.reason, (name, result.reason)
            assert result.value is None
        else:
            assert result.reason is None
            assert result.value.status == CaseStatus.PASS and result.value.check["passed"]
            assert result.value.kernel == "correct"
            pids.append(worker.call(os.getpid).value)
    # A fresh process after each crash or hang: three different children served the honest kernel.
    assert len(set(pids)) == 3


def test_kernel_exceptions_stay_outcomes_and_keep_the_worker(worker):
    before = worker.call(os.getpid).value
    starts = worker.starts
    result = verify_planted(worker, "raises")
    assert result.status == STATUS_OK
    assert result.value.status == CaseStatus.ERROR and "tile configuration not supported" in result.value.reason
    assert worker.call(os.getpid).value == before and worker.starts == starts


def test_exception_escaping_the_function_is_a_crash_of_the_call_only(worker):
    pid = worker.call(os.getpid).value
    result = worker.call(int, "not a number")
    assert result.status == STATUS_CRASHED
    assert result.reason.startswith("raised ValueError: invalid literal")
    assert worker.call(os.getpid).value == pid


def test_exit_code_is_reported(worker):
    result = worker.call(os._exit, 7)
    assert result.status == STATUS_CRASHED and result.reason == "worker died: exit code 7"
    assert worker.call(pow, 2, 10).value == 1024


def test_unpicklable_return_value_is_reported(worker):
    result = worker.call(open, os.devnull)   # a file object cannot travel back
    assert result.status == STATUS_CRASHED and "could not be sent back" in result.reason


def test_unpicklable_arguments_fail_in_the_caller(worker):
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        worker.call(len, lambda: None)


def test_gpu_pinning_sets_the_environment_of_the_child_only(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    w = Worker(env=pin_env(3), timeout_s=60)
    try:
        assert w.call(os.getenv, "CUDA_VISIBLE_DEVICES").value == "3"
        assert os.environ.get("CUDA_VISIBLE_DEVICES") is None
    finally:
        w.close()
    assert w.pid is None
    assert pin_env(None) == {}
    # A parent that already sees a subset of the GPUs: lane 1 is the second of those.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert pin_env(1) == {"CUDA_VISIBLE_DEVICES": "6"}


def test_describe_exit():
    assert describe_exit(-9) == "worker died: signal 9 (SIGKILL)"
    assert describe_exit(134) == "worker died: exit code 134"
    assert describe_exit(None) == "worker died (exit status unknown)"


@pytest.mark.gpu
def test_illegal_address_on_the_gpu_is_a_crash_and_the_next_kernel_passes():
    pytest.importorskip("triton")
    w = Worker(timeout_s=300.0)
    try:
        bad = verify_planted(w, "illegal_address", device="cuda")
        assert bad.status == STATUS_CRASHED, bad
        assert "illegal" in bad.reason.lower() or "worker died" in bad.reason, bad.reason
        good = verify_planted(w, "correct", device="cuda")
        assert good.status == STATUS_OK and good.value.status == CaseStatus.PASS, good
    finally:
        w.close()


# ------------------------------------------------------------------------------------------------
# a whole `fp4bench run` with worker isolation: crashes, hangs, Ctrl-C and --resume
# ------------------------------------------------------------------------------------------------
RUN_SHAPES = "shapes:\n  - {m: 64, n: 96, k: 256}\n"
RUN_ARGS = ["--format", "nvfp4", "--device", "cpu", "--isolation", "process", "--budget", "0.2",
            "--min-samples", "3", "--quiet"]


def _cases_by_kernel(path: Path) -> dict[str, dict]:
    return {c["kernel"]: c for c in json.loads(path.read_text())["cases"]}


def test_run_reports_each_crash_and_keeps_the_other_results(tmp_path):
    shapes = tmp_path / "s.yml"
    shapes.write_text(RUN_SHAPES)
    out = tmp_path / "r.json"
    kernels = ",".join(str(PLANTED / f"{k}.py") for k in ("correct", "segfault", "sleep_forever", "abort"))
    r = CliRunner().invoke(main, ["run", "--shapes", str(shapes), "--kernel", f"{kernels},torch-ref",
                                  "--case-timeout", "4", "--json", str(out), *RUN_ARGS])
    assert r.exit_code == 1, r.output   # crashed cases fail the run, after every case ran
    cases = _cases_by_kernel(out)
    assert cases["segfault"]["status"] == "error" and "SIGSEGV" in cases["segfault"]["reason"]
    assert cases["abort"]["status"] == "error" and "SIGABRT" in cases["abort"]["reason"]
    assert cases["sleep_forever"]["status"] == "error"
    assert cases["sleep_forever"]["reason"].startswith("timed out: no result after 4 s")
    for honest in ("correct", "torch-ref"):   # before and after the crashes
        assert cases[honest]["status"] == "pass" and cases[honest]["timing"]["stats"]["median"] > 0


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads child processes from /proc")
def test_interrupted_run_keeps_its_results_and_resume_runs_only_the_rest(tmp_path):
    shapes = tmp_path / "s.yml"
    shapes.write_text(RUN_SHAPES)
    out = tmp_path / "r.json"
    kernels = f"{PLANTED / 'correct.py'},{PLANTED / 'sleep_forever.py'}"
    cmd = [sys.executable, "-m", "fp4bench", "run", "--shapes", str(shapes), "--kernel", kernels,
           "--json", str(out), *RUN_ARGS]
    proc = subprocess.Popen(cmd + ["--case-timeout", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:   # the honest case is written as soon as it completes
            if out.exists() and len(json.loads(out.read_text())["cases"]) == 1:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
        else:
            pytest.fail("the first case never reached the results file")
        workers = _children(proc.pid)
        assert workers, "the run has no worker process"
        proc.send_signal(signal.SIGINT)   # Ctrl-C while the hanging kernel runs
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    said = proc.stderr.read().decode()
    assert "the 1 finished case(s) are saved in" in said and "--resume" in said, said
    kept = json.loads(out.read_text())["cases"]
    assert [c["kernel"] for c in kept] == ["correct"] and kept[0]["status"] == "pass"
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{w}").exists() for w in workers), "a worker outlived the interrupted run"

    resumed = subprocess.run(cmd + ["--case-timeout", "3", "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 1, resumed.stderr
    assert "resuming: 1 case(s) already in" in resumed.stderr and "1 to run" in resumed.stderr
    cases = json.loads(out.read_text())["cases"]
    assert [c["kernel"] for c in cases] == ["correct", "sleep_forever"]
    assert cases[0] == kept[0]   # the finished case was kept as it was, not re-run
    assert cases[1]["reason"].startswith("timed out")
