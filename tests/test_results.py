"""Results documents: schema, atomic incremental writes, environment fingerprint."""

from __future__ import annotations

import json
import math

import pytest

from fp4bench.results import (SCHEMA_VERSION, ResultsFileError, ResultsWriter, atomic_write_text, dumps,
                              environment_fingerprint, load_results, make_document)


def test_writer_rewrites_the_whole_document_after_each_case(tmp_path):
    path = tmp_path / "sub" / "r.json"
    env = environment_fingerprint([], argv=["fp4bench", "run", "--shapes", "x y.yml"])
    w = ResultsWriter(path, env, {"formats": ["nvfp4"]})
    w.add({"kernel": "a", "status": "pass", "value": 1.5})
    assert [c["kernel"] for c in load_results(path)["cases"]] == ["a"]
    w.add({"kernel": "b", "status": "fail", "value": float("nan")})
    doc = load_results(path)
    assert [c["kernel"] for c in doc["cases"]] == ["a", "b"]
    assert doc["cases"][1]["value"] is None            # NaN is not JSON
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
    text = dumps(make_document({}, {}, [{"x": math.inf, "y": [math.nan, 1.0]}]))
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["cases"][0] == {"x": None, "y": [None, 1.0]}
