"""Results documents: schema, atomic incremental writes, environment fingerprint."""

from __future__ import annotations

import json
import math

import pytest

from fp4bench.case import CaseRecord, CaseStatus
from fp4bench.problem import Shape
from fp4bench.results import (
    SCHEMA_VERSION,
    ResultsFileError,
    ResultsWriter,
    atomic_write_text,
    dumps,
    environment_fingerprint,
    load_results,
    make_document,
)


def record(kernel, status="pass", **more):
    return CaseRecord(kernel=kernel, format="nvfp4", shape=Shape(64, 128, 256), status=CaseStatus(status), **more)


def test_writer_rewrites_the_whole_document_after_each_case(tmp_path):
    path = tmp_path / "sub" / "r.json"
    env = environment_fingerprint([], argv=["fp4bench", "run", "--shapes", "x y.yml"])
    w = ResultsWriter(path, env, {"formats": ["nvfp4"]})
    w.add(record("a", metrics={"tflops": 1.5}))
    assert [c.kernel for c in load_results(path)["cases"]] == ["a"]
    w.add(record("b", "fail", metrics={"tflops": float("nan")}))
    doc = load_results(path)
    assert [c.kernel for c in doc["cases"]] == ["a", "b"]
    assert doc["cases"][1].metrics["tflops"] is None            # NaN is not JSON
    assert doc["cases"][1].status == CaseStatus.FAIL
    assert path.stat().st_mode & 0o777 == 0o644                  # readable by a CI artifact step
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["environment"]["command"] == "fp4bench run --shapes 'x y.yml'"
    assert doc["settings"] == {"formats": ["nvfp4"]}
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]   # no temporary left behind


def test_fingerprint_has_versions_and_clocks():
    env = environment_fingerprint([{"name": "GPU X"}], {"0": {"sm_mhz": 1980.0}}, argv=["fp4bench"])
    sw = env["software"]
    for key in ("fp4bench", "fp4bench_commit", "torch", "triton", "cutlass", "python"):
        assert key in sw
    assert sw["torch"]
    assert env["gpus"] == [{"name": "GPU X"}]
    assert env["clocks"] == {"start": {"0": {"sm_mhz": 1980.0}}, "end": {}}
    json.loads(dumps(env))


def test_git_commit_of_this_checkout():
    from fp4bench.results import git_commit

    commit = git_commit()
    if commit is None:
        pytest.skip("not a git checkout")
    assert len(commit.split("-")[0]) == 40


@pytest.mark.parametrize("text, message", [
    ("{not json", "not JSON"),
    ('{"schema": "other"}', "not an fp4bench results file"),
    ('{"schema": "fp4bench-results", "schema_version": 999, "cases": []}', "schema version 999"),
    ('{"schema": "fp4bench-results", "schema_version": 1, "cases": 3}', "'cases' must be a list"),
])
def test_load_rejects_bad_documents(tmp_path, text, message):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(ResultsFileError, match=message):
        load_results(p)
    with pytest.raises(ResultsFileError, match="cannot read"):
        load_results(tmp_path / "missing.json")


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_text(p, "old")

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(TypeError):
        atomic_write_text(p, Boom())   # f.write of a non-str fails inside the temporary file
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["r.json"]


def test_dumps_never_emits_nan():
    text = dumps(make_document({}, {}, [record("a", metrics={"x": math.inf, "y": [math.nan, 1.0]})]))
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["cases"][0]["metrics"] == {"x": None, "y": [None, 1.0]}


def test_records_round_trip_and_share_one_key():
    r = record("k", config={"block_n": 128, "source": "tuned"}, tuning=({"config": {}, "median_us": 1.0},),
               findings=("note",), timing={"stats": {"median": 2e-6}, "converged": False})
    back = CaseRecord.from_dict(json.loads(dumps({"c": r.to_dict()}))["c"])
    assert back == r
    assert back.key == ("k", "gemm", "nvfp4", 64, 128, 256, 1, 1111)
    assert back.median_s == 2e-6 and back.converged is False
    with pytest.raises(ValueError, match="unknown case field"):
        CaseRecord.from_dict({**r.to_dict(), "surprise": 1})


def test_version_1_documents_are_read_and_upgraded(tmp_path):
    v1_case = {"kernel": "sm90-nvfp4", "role": "kernel", "format": "nvfp4",
               "shape": {"m": 128, "n": 7168, "k": 2048, "l": 1, "seed": 1111}, "gpu": 0, "status": "pass",
               "reason": None, "check": None, "findings": [], "timing": {"stats": {"median": 3e-5}}, "sol": None,
               "metrics": None, "notes": [], "seconds": 1.0}
    p = tmp_path / "v1.json"
    p.write_text(json.dumps({"schema": "fp4bench-results", "schema_version": 1, "environment": {},
                             "settings": {}, "cases": [v1_case]}))
    doc = load_results(p)
    (case,) = doc["cases"]
    assert doc["schema_version"] == SCHEMA_VERSION
    assert case.problem == "gemm" and case.config is None and case.median_s == 3e-5
    assert case.key == ("sm90-nvfp4", "gemm", "nvfp4", 128, 7168, 2048, 1, 1111)


def test_the_stored_h200_baseline_still_loads():
    from pathlib import Path

    doc = load_results(Path(__file__).resolve().parents[1] / "baselines" / "nvidia-h200.json")
    assert doc["cases"] and all(isinstance(c, CaseRecord) for c in doc["cases"])
