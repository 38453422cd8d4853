"""Sweeps beyond one machine and CI gates: `run --shard I/N`, `fp4bench merge`, the exit code of a run that
checked nothing, and the tuned-configuration table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from fp4bench.case import CaseSpec
from fp4bench.cli import main
from fp4bench.commands.run import shard_positions
from fp4bench.errors import EXIT_NOTHING_CHECKED
from fp4bench.problem import Shape
from fp4bench.results import load_results

ROOT = Path(__file__).resolve().parent.parent
SHAPES = textwrap.dedent("""\
    shapes:
      - {m: 64, n: 96, k: 256}
      - {m: 32, n: 64, k: 512, l: 2}
      - {m: 128, n: 32, k: 128}
      - {m: 16, n: 16, k: 64}
    """)
FAST = ["--device", "cpu", "--isolation", "none", "--budget", "0.02", "--min-samples", "2", "--seeds", "1",
        "-q", "--no-measure-ceilings", "--format", "nvfp4,mxfp4"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def shapes(tmp_path):
    p = tmp_path / "s.yml"
    p.write_text(SHAPES)
    return p


def test_three_shards_merged_are_exactly_the_unsharded_run(shapes, tmp_path):
    kernels = ["--kernels", "torch-ref,cublas-dense"]
    whole = tmp_path / "whole.json"
    assert invoke("run", "--shapes", shapes, *kernels, "--json", whole, *FAST).exit_code == 0
    parts = []
    for i in (1, 2, 3):
        part = tmp_path / f"part{i}.json"
        r = invoke("run", "--shapes", shapes, *kernels, "--json", part, "--shard", f"{i}/3", *FAST)
        assert r.exit_code == 0, r.output
        parts.append(part)
    sizes = [len(load_results(p)["cases"]) for p in parts]
    assert all(sizes) and sum(sizes) == 16
    merged = tmp_path / "all.json"
    r = invoke("merge", *parts, "-o", merged)
    assert r.exit_code == 0 and "16 case(s) from 3 document(s)" in r.output, r.output
    assert [c.key for c in load_results(merged)["cases"]] == [c.key for c in load_results(whole)["cases"]]
    # The merged document is an ordinary one: report and compare take it.
    assert invoke("report", merged).exit_code == 0
    r = invoke("compare", whole, merged, "--threshold", "1000%")
    # Host timings of 20 ms budgets jitter on a shared CPU; what matters is that every case matched.
    summary = r.output.strip().splitlines()[-1]
    assert r.exit_code in (0, 1) and summary.startswith("16 case(s):") and "new" not in summary, r.output


def test_merge_refuses_other_gpus_commits_and_repeated_cases(shapes, tmp_path):
    one = tmp_path / "one.json"
    assert invoke("run", "--shapes", shapes, "--kernels", "torch-ref", "--json", one, "--shard", "1/2",
                  *FAST).exit_code == 0
    doc = json.loads(one.read_text())
    other = tmp_path / "other.json"
    doc["environment"]["gpus"] = [{"name": "NVIDIA H100"}]
    doc["cases"] = []
    other.write_text(json.dumps(doc))
    r = invoke("merge", one, other, "-o", tmp_path / "x.json")
    assert r.exit_code == 2 and "not shards of one sweep" in r.output and "GPU" in r.output
    assert invoke("merge", one, other, "-o", tmp_path / "x.json", "--force").exit_code == 0
    doc["environment"]["gpus"], doc["environment"]["software"]["fp4bench_commit"] = [], "0" * 40
    other.write_text(json.dumps(doc))
    r = invoke("merge", one, other, "-o", tmp_path / "x.json")
    assert r.exit_code == 2 and "commit" in r.output
    r = invoke("merge", one, one, "-o", tmp_path / "x.json")
    assert r.exit_code == 2 and "is in both" in r.output


def test_shards_are_deterministic_balanced_and_cover_the_plan():
    cases = [CaseSpec("k", "nvfp4", Shape(m, 7168, 2048)) for m in (1, 16, 64, 128, 256, 512, 1024, 2048, 4096)]
    split = [shard_positions(cases, i, 3) for i in (1, 2, 3)]
    assert sorted(p for part in split for p in part) == list(range(len(cases)))
    assert split == [shard_positions(cases, i, 3) for i in (1, 2, 3)]
    # The largest case has a shard nearly to itself; the small ones are spread over the rest.
    assert sum(len(part) for part in split) == 9 and min(len(part) for part in split) >= 1
    for bad in ("0/3", "4/3", "x", "1-3"):
        r = invoke("run", "--shard", bad, "--device", "cpu")
        assert r.exit_code == 2 and "--shard" in r.output


def test_a_run_that_checked_nothing_fails_the_gate(shapes):
    r = invoke("verify", "--shapes", shapes, "--kernel", "sm90-nvfp4", "--device", "cpu", "--isolation", "none")
    assert r.exit_code == EXIT_NOTHING_CHECKED, r.output
    assert "0 passed, 0 failed, 0 errors, 4 skipped" in r.output and "nothing was checked" in r.output


def test_tuned_table_round_trip_and_lookup(tmp_path, monkeypatch):
    from fp4bench import config_table

    monkeypatch.setenv(config_table.TABLE_DIR_ENV, str(tmp_path))
    shape = Shape(128, 7168, 2048, seed=5)
    assert config_table.tuned_config("NVIDIA H200", "sm90-nvfp4", "nvfp4", shape) is None
    path = config_table.store_entry("NVIDIA H200", "sm90-nvfp4", "nvfp4", shape,
                                    {"config": {"block_n": 64}, "median_us": 9.5, "rse": 0.003})
    assert path == tmp_path / "nvidia-h200.json"
    # The seed does not change a launch: another seed finds the same entry.
    assert config_table.tuned_config("NVIDIA H200", "sm90-nvfp4", "nvfp4", shape.with_seed(9)) == {"block_n": 64}
    assert config_table.tuned_config("NVIDIA H100", "sm90-nvfp4", "nvfp4", shape) is None
    path.write_text("{broken")
    config_table._cached_table.cache_clear()
    with pytest.raises(config_table.ConfigTableError, match="unreadable"):
        config_table.tuned_config("NVIDIA H200", "sm90-nvfp4", "nvfp4", shape)


def test_tuned_table_stores_from_several_processes_lose_nothing(tmp_path):
    # Each process adds its own entries to one table (a read-modify-write under the table's lock).
    script = ("import sys\n"
              "from fp4bench import config_table\n"
              "from fp4bench.problem import Shape\n"
              "w = int(sys.argv[1])\n"
              "for i in range(15):\n"
              "    config_table.store_entry('NVIDIA H200', 'k', 'nvfp4', Shape(w + 1, 128, 256 * (i + 1)),\n"
              "                             {'config': {'worker': w, 'i': i}})\n")
    env = {**os.environ, "FP4BENCH_TUNED_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(w)], env=env) for w in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    from fp4bench import config_table

    table = config_table.read_table(tmp_path / "nvidia-h200.json", "NVIDIA H200")
    assert sorted((e["config"]["worker"], e["config"]["i"]) for e in table.entries.values()) == \
        [(w, i) for w in range(3) for i in range(15)]


def test_triton_kernels_choose_a_recorded_configuration(tmp_path, monkeypatch):
    from fp4bench import config_table
    from fp4bench.formats import gemm_format
    from fp4bench.kernels import get_kernel
    from fp4bench.kernels.fp4_triton.launch import GPU_CANDIDATES
    from fp4bench.problem import generate

    kernel = get_kernel("sm90-nvfp4-triton")
    problem = generate(Shape(128, 256, 512), gemm_format("nvfp4"))
    # Off a GPU: the CPU configuration, recorded with where it came from.
    cfg = kernel.launch_config(problem)
    assert cfg["source"] == "heuristic" and cfg["block_n"] == 32 and cfg["split_k"] == 2
    candidates = kernel.tuning_candidates(problem)
    assert len(candidates) == 1
    # On a GPU the table wins over the heuristic (the GPU name is the only device fact it needs).
    monkeypatch.setenv(config_table.TABLE_DIR_ENV, str(tmp_path))
    monkeypatch.setattr("fp4bench.kernels.base.gpu_model", lambda device: "NVIDIA H200")
    chosen, source = kernel.chosen_config(problem)
    assert source == "heuristic" and chosen == kernel.candidates(problem)[0].to_dict()
    stored = {**GPU_CANDIDATES[3].to_dict(), "split_k": 4}
    config_table.store_entry("NVIDIA H200", "sm90-nvfp4-triton", "nvfp4", problem.shape, {"config": stored})
    chosen, source = kernel.chosen_config(problem)
    assert source == "tuned" and chosen == stored
    assert kernel.launch_config(problem)["source"] == "tuned"


from fp4bench.kernels.base import Kernel as _Kernel  # noqa: E402


class _DelayKernel(_Kernel):
    """A kernel with two launch configurations: one adds a host delay. Tuning must find the other."""

    from fp4bench.kernels.torch_ref import TorchReference as _Ref

    name, role, formats, math_path = "delayed", "kernel", ("nvfp4",), None

    def __init__(self):
        self.ref = self._Ref()

    def unsupported_reason(self, kind, fmt_name, target):
        return None

    def approximation_allowance(self, problem):
        return None

    def can_implement(self, problem):
        return None

    def tuning_candidates(self, problem):
        # 50 ms apart: far beyond a loaded CI machine's jitter on the CPU reference underneath.
        return ({"delay_s": 0.05}, {"delay_s": 0.0})

    def launch_config(self, problem):
        from fp4bench.config_table import tuned_config

        stored = tuned_config("cpu", self.name, problem.fmt.name, problem.shape)
        return stored or self.tuning_candidates(problem)[0]

    def prepare_config(self, problem, config):
        import time

        run = self.ref.prepare(problem)

        def delayed(data):
            time.sleep(config["delay_s"])
            return run(data)

        return delayed

    def prepare(self, problem):
        return self.prepare_config(problem, self.launch_config(problem))


def test_tuning_stores_the_faster_configuration_and_records_every_candidate(tmp_path, monkeypatch):
    from fp4bench import config_table
    from fp4bench.pipeline import run_case
    from fp4bench.timing import TimingOptions

    monkeypatch.setenv(config_table.TABLE_DIR_ENV, str(tmp_path))
    config_table._cached_table.cache_clear()
    monkeypatch.setattr("fp4bench.kernels.get_kernel", lambda name, problem=None: _DelayKernel())
    shape = Shape(32, 48, 128, seed=3)
    timing = TimingOptions(budget_s=0.1, min_samples=5)
    record = run_case(CaseSpec("delayed", "nvfp4", shape, timing=timing, check_seeds=1, tune=True))
    assert record.status == "pass", record.reason
    assert [t["config"] for t in record.tuning] == [{"delay_s": 0.05}, {"delay_s": 0.0}]
    assert record.tuning[0]["median_us"] > record.tuning[1]["median_us"] + 40_000
    assert record.config == {"delay_s": 0.0} and record.median_s * 1e6 < record.tuning[0]["median_us"] - 40_000
    assert config_table.tuned_config("cpu", "delayed", "nvfp4", shape) == {"delay_s": 0.0}
    # Without --tune the stored configuration is used as it is, and recorded.
    again = run_case(CaseSpec("delayed", "nvfp4", shape, timing=timing, check_seeds=1))
    assert again.config == {"delay_s": 0.0} and again.tuning is None
