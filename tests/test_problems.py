"""The competition's GEMV, dual GEMM and grouped GEMM problems end to end: `verify --problem` passes an honest
submission of each and flags each planted bug (tests/fixtures/problems: plain-torch submissions as downloaded,
`from task import input_t, output_t`), on the CPU with each problem's bundled smoke cases. Also: the reference
semantics against float64 and a hand-written computation, the competition's task.yml files as shape files, the
check on competition data being the competition's own (no allowance), speed-of-light sizes, and results of
grouped cases surviving JSON, compare and merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fp4bench.case import CaseRecord, CaseStatus, shape_from_dict
from fp4bench.checking import check_output
from fp4bench.cli import main
from fp4bench.formats import gemm_format
from fp4bench.problem import DUAL_GEMM, GEMM, GEMV, GROUP_GEMM, Shape, generate, kind_spec, min_bytes
from fp4bench.reference import expected_output, reference, reference_output
from fp4bench.shapes import ShapeFileError, load_shapes

PROBLEMS = Path(__file__).parent / "fixtures" / "problems"
NVFP4 = gemm_format("nvfp4")
PLANTED = {
    "nvfp4_gemv": ["gemv_ignores_vector_scales", "gemv_first_batch_only"],
    "nvfp4_dual_gemm": ["dual_gemm_silu_on_wrong_product", "dual_gemm_shared_b_scales"],
    "nvfp4_group_gemm": ["group_gemm_first_group_k", "group_gemm_full_tiles_only"],
}


def verify(problem: str, kernel: str, *more: str):
    """verify --problem on the problem's smoke cases (on the CPU unless `more` says --device cuda)."""
    device = [] if "--device" in more else ["--device", "cpu"]
    r = CliRunner().invoke(main, ["verify", "--problem", problem, "--group", "smoke", *device,
                                  "--isolation", "none", "--kernel", str(PROBLEMS / f"{kernel}.py"), *more])
    return r.exit_code, r.output


@pytest.mark.parametrize("problem", sorted(PLANTED))
def test_an_honest_submission_passes(problem):
    code, out = verify(problem, f"{problem.removeprefix('nvfp4_')}_correct")
    assert code == 0, out
    assert " 0 failed, 0 errors, 0 skipped" in out


@pytest.mark.parametrize("problem,kernel", [(p, k) for p, ks in sorted(PLANTED.items()) for k in ks])
def test_each_planted_bug_is_flagged(problem, kernel):
    code, out = verify(problem, kernel)
    assert code == 1, out
    assert "FAIL" in out and "mismatch" in out


@pytest.mark.gpu
@pytest.mark.parametrize("problem", sorted(PLANTED))
def test_on_cuda_the_honest_submission_and_the_baselines_pass_and_a_planted_bug_fails(problem):
    name = problem.removeprefix("nvfp4_")
    kernels = f"{PROBLEMS / f'{name}_correct.py'},torch-ref,torch-dequant-mm,cublas-dense"
    r = CliRunner().invoke(main, ["verify", "--problem", problem, "--group", "smoke", "--device", "cuda",
                                  "--isolation", "none", "--kernel", kernels])
    assert r.exit_code == 0 and " 0 failed, 0 errors, 0 skipped" in r.output, r.output
    code, out = verify(problem, PLANTED[problem][0], "--device", "cuda")
    assert code == 1 and "FAIL" in out, out


def test_an_unsupported_problem_and_format_pair_is_one_line_exit_2():
    r = CliRunner().invoke(main, ["verify", "--problem", "nvfp4_gemv", "--format", "mxfp4", "--device", "cpu"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "only in format nvfp4" in lines[0], r.output
    r = CliRunner().invoke(main, ["verify", "--problem", "nvfp4_gemmm", "--device", "cpu"])
    assert r.exit_code == 2 and "unknown problem 'nvfp4_gemmm'" in r.output, r.output


# ------------------------------------------------------------------------------------------------------------
# references
# ------------------------------------------------------------------------------------------------------------
def _fixture_dequant():
    """The fixtures' own plain-torch decoder (tests/fixtures/problems/_nvfp4.py), independent of fp4bench's."""
    import sys

    sys.path.insert(0, str(PROBLEMS))
    try:
        from _nvfp4 import dequant
    finally:
        sys.path.pop(0)
    return dequant


def _plain(a, sfa, b, sfb) -> torch.Tensor:
    """float64 A @ B^T of one batch, decoded independently of fp4bench's codecs."""
    dequant = _fixture_dequant()
    return dequant(a, sfa).double() @ dequant(b, sfb).double().T


def test_gemv_reference_is_row_0_of_b_with_its_scales(random_seed):
    p = generate(Shape(200, 1, 1056, 2, seed=random_seed), NVFP4, kind=GEMV)
    a, b, sfa, sfb, _, _, c = p.data
    assert b.shape[0] == 128 and c.shape == (200, 1, 2)
    ref = reference(p, torch.float64)
    for i in range(2):
        assert torch.equal(ref[:, :, i], _plain(a[:, :, i], sfa[:, :, i], b[:1, :, i], sfb[:1, :, i]))


def test_dual_gemm_reference_is_silu_of_the_first_product_times_the_second(random_seed):
    p = generate(Shape(130, 72, 96, 2, seed=random_seed), NVFP4, kind=DUAL_GEMM)
    a, b1, b2, sfa, sfb1, sfb2, *_, c = p.data
    ref = reference(p, torch.float64)
    for i in range(2):
        r1 = _plain(a[:, :, i], sfa[:, :, i], b1[:, :, i], sfb1[:, :, i])
        r2 = _plain(a[:, :, i], sfa[:, :, i], b2[:, :, i], sfb2[:, :, i])
        assert torch.allclose(ref[:, :, i], torch.nn.functional.silu(r1) * r2, rtol=1e-12, atol=0)
    # fp32 throughout, then fp16, as the competition: the fp32 reference rounds to the fp64 one's fp16 mostly.
    assert reference_output(p).dtype == torch.float16


def test_group_gemm_reference_is_a_list_of_each_groups_product(random_seed):
    p = generate(Shape((40, 56, 72), (128, 64, 96), (256, 96, 512), seed=random_seed), NVFP4, kind=GROUP_GEMM)
    (abc, scales, _, sizes), ref = p.data, reference(p, torch.float64)
    assert isinstance(ref, list) and len(ref) == 3
    assert sizes == [(40, 128, 256, 1), (56, 64, 96, 1), (72, 96, 512, 1)]
    for (a, b, c), (sfa, sfb), r in zip(abc, scales, ref):
        assert r.shape == c.shape
        assert torch.equal(r[:, :, 0], _plain(a[:, :, 0], sfa[:, :, 0], b[:, :, 0], sfb[:, :, 0]))


@pytest.mark.parametrize("kind,shape", [
    (GEMM, Shape(128, 7168, 2048)),
    (GEMV, Shape(512, 1, 16384, 1)),
    (GROUP_GEMM, Shape((80, 176), (512, 512), (7168, 7168))),
])
def test_on_competition_data_the_check_is_the_competitions_own(kind, shape, random_seed):
    """Integer scales and K <= 16384: exact fp32 accumulation is guaranteed, so no allowance widens the bound."""
    p = generate(shape.with_seed(random_seed), NVFP4, kind=kind)
    exp = expected_output(p)
    allowances = exp.allowance if isinstance(exp.allowance, list) else [exp.allowance]
    assert all(float(a.abs().max()) == 0.0 for a in allowances)
    # A kernel whose tensor cores keep fewer accumulator bits (Hopper's fp8 path) keeps the allowance.
    loose = expected_output(p, fp32_adds=False).allowance
    assert all(float(a.max()) > 0 for a in (loose if isinstance(loose, list) else [loose]))
    # And the fp32 reference equals the float64 one: the accumulation really is exact.
    values, exact = reference(p), reference(p, torch.float64)
    for v, e in zip(values if isinstance(values, list) else [values], exact if isinstance(exact, list) else [exact]):
        assert torch.equal(v.double(), e)


def test_dual_gemm_allowance_covers_reordered_accumulation_and_still_catches_a_wrong_block(random_seed):
    p = generate(Shape(64, 96, 4096, seed=random_seed), NVFP4, kind=DUAL_GEMM)
    exp = expected_output(p)
    a, b1, b2, sfa, sfb1, sfb2, *_ = p.data
    dequant = _fixture_dequant()
    da, db1, db2 = (dequant(x[:, :, 0], s[:, :, 0]) for x, s in ((a, sfa), (b1, sfb1), (b2, sfb2)))
    # Another summation order (7 interleaved partial sums) in fp32: a correct kernel's result.
    r1 = sum(da[:, i::7] @ db1[:, i::7].T for i in range(7))
    r2 = sum(da[:, i::7] @ db2[:, i::7].T for i in range(7))
    reordered = (torch.nn.functional.silu(r1) * r2).unsqueeze(-1).to(torch.float16)
    assert check_output(reordered, exp.values, torch.float16, allowance=exp.allowance).passed
    # The allowance is a few tenths of a percent of the large outputs: a 1% error there is still caught.
    bad = reordered.clone()
    where = exp.values.abs().argmax()
    bad.view(-1)[where] *= 1.01
    assert not check_output(bad, exp.values, torch.float16, allowance=exp.allowance).passed
    assert float((exp.allowance / exp.values.abs()).flatten()[where]) < 3e-3


# ------------------------------------------------------------------------------------------------------------
# shape files, sizes, results
# ------------------------------------------------------------------------------------------------------------
COMPETITION_STYLE = """\
# name: a competition task file, as published (keys quoted, inline maps, a duplicated test case)
files:
  - {"name": "submission.py", "source": "@SUBMISSION@"}
lang: "py"
description: |
  text
config:
  main: "eval.py"
tests:
%s
benchmarks:
%s
ranking_by: "geom"
"""


@pytest.mark.parametrize("kind,tests,benchmarks,labels", [
    (GEMV, ['{"m": 128, "k": 256, "l": 1, "seed": 1111}'] * 2, ['{"m": 4096, "k": 7168, "l":8, "seed": 1111}'],
     ["128x1x256", "4096x1x7168x8"]),
    (DUAL_GEMM, ['{"m": 256, "n": 512, "k": 256, "l": 1, "seed": 1111}'],
     ['{"m": 512, "n": 3072, "k": 7168, "l": 1, "seed": 1111}'], ["256x512x256", "512x3072x7168"]),
    (GROUP_GEMM, ['{"m": [96, 128], "n": [128, 256], "k": [256, 512], "g": 2, "seed": 1111}'],
     ['{"m": [80, 176, 128, 72, 64, 248, 96, 160], "n": [4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096], '
      '"k": [7168, 7168, 7168, 7168, 7168, 7168, 7168, 7168], "g": 8, "seed": 1111}'],
     ["g2 M224 N* K*", "g8 M1024 N4096 K7168"]),
])
def test_a_competition_task_file_of_each_problem_is_a_shape_file(tmp_path, kind, tests, benchmarks, labels):
    task = tmp_path / "task.yml"
    task.write_text(COMPETITION_STYLE % ("\n".join(f"  - {t}" for t in tests),
                                         "\n".join(f"  - {b}" for b in benchmarks)))
    shapes = load_shapes(task, kind=kind)
    assert [str(s) for s in shapes] == labels
    if kind == GROUP_GEMM:
        assert shapes[0].groups == [(96, 128, 256), (128, 256, 512)]
    # Read as the GEMM's, the file says which --problem it belongs to.
    if kind != DUAL_GEMM:
        with pytest.raises(ShapeFileError, match=f"use --problem {kind_spec(kind).competition}"):
            load_shapes(task)


@pytest.mark.parametrize("text,message", [
    ("- {m: [64, 72], n: [128], k: [256, 256]}\n", "one entry per group"),
    ("- {m: [64, 72], n: [128, 128], k: [256, 256], g: 3}\n", "g = 3"),
    ("- {m: [64, 0], n: [128, 128], k: [256, 256]}\n", "m[1] must be positive"),
    ("- {m: 64, n: 128, k: 256}\n", "must be a list of integers"),
])
def test_bad_grouped_entries(tmp_path, text, message):
    path = tmp_path / "g.yml"
    path.write_text(text)
    with pytest.raises(ShapeFileError, match=message.replace("[", r"\[")):
        load_shapes(path, kind=GROUP_GEMM)


def test_bundled_problem_sets_hold_the_competitions_cases():
    counts = {"nvfp4_gemv": (9, 3), "nvfp4_dual_gemm": (9, 4), "nvfp4_group_gemm": (10, 4)}
    for name, (tests, benchmarks) in counts.items():
        kind = {"nvfp4_gemv": GEMV, "nvfp4_dual_gemm": DUAL_GEMM, "nvfp4_group_gemm": GROUP_GEMM}[name]
        assert len(load_shapes(name, ("tests",), kind)) == tests      # duplicates of task.yml dropped
        assert len(load_shapes(name, ("benchmarks",), kind)) == benchmarks


def test_flops_and_bytes_per_kind():
    spec = kind_spec
    gemv = Shape(7168, 1, 16384)
    assert spec(GEMV).flops(gemv) == 2 * 7168 * 16384
    # A read once with its scales, the vector (one row, not the 128-row padding) with its scales, c written.
    assert min_bytes(gemv, NVFP4, GEMV) == 7168 * (8192 + 1024) + (8192 + 1024) + 7168 * 2
    dual = Shape(256, 4096, 7168)
    assert spec(DUAL_GEMM).flops(dual) == 2 * (2 * 256 * 4096 * 7168)
    assert min_bytes(dual, NVFP4, DUAL_GEMM) == 256 * 4032 + 2 * 4096 * 4032 + 256 * 4096 * 2
    grouped = Shape((192, 320), (3072, 3072), (4096, 4096))
    assert spec(GROUP_GEMM).flops(grouped) == 2 * 512 * 3072 * 4096
    assert min_bytes(grouped, NVFP4, GROUP_GEMM) == sum(min_bytes(Shape(m, 3072, 4096), NVFP4) for m in (192, 320))


def test_grouped_records_survive_json_compare_and_merge(tmp_path):
    from fp4bench.compare import compare_documents
    from fp4bench.results import dumps, load_results, make_document

    shape = Shape((80, 176), (4096, 4096), (7168, 7168), seed=1111)
    timing = {"stats": {"median": 1e-5, "std": 1e-8, "n": 10, "rse": 0.001}, "clock": "cuda", "mode": "eager"}
    record = CaseRecord("torch-ref", "nvfp4", shape, CaseStatus.PASS, problem=GROUP_GEMM, timing=timing)
    doc = json.loads(dumps(make_document({"gpus": []}, {}, [record])))
    back = CaseRecord.from_dict(doc["cases"][0])
    assert back.shape == shape and back.key == record.key and hash(back.key)
    assert shape_from_dict(doc["cases"][0]["shape"]).groups == [(80, 4096, 7168), (176, 4096, 7168)]
    other = record.but(timing={**timing, "stats": {**timing["stats"], "median": 2e-5}})
    for name, r in (("base", record), ("new", other)):
        (tmp_path / f"{name}.json").write_text(dumps(make_document({"gpus": []}, {}, [r])))
    result = compare_documents(load_results(tmp_path / "base.json"), load_results(tmp_path / "new.json"))
    assert [row.key for row in result.rows] == [record.key] and result.rows[0].verdict == "regression"
    # merge reads the shard positions back from JSON lists.
    from fp4bench.case import hashable_key

    assert hashable_key(json.loads(json.dumps(list(record.key)))) == record.key


def test_each_problem_has_its_own_baseline_file(tmp_path):
    from fp4bench.compare import baseline_path

    env = {"gpus": [{"name": "NVIDIA H200"}]}
    assert baseline_path(tmp_path, {"environment": env, "settings": {}}).name == "nvidia-h200.json"
    assert baseline_path(tmp_path, {"environment": env, "settings": {"problem": GEMM}}).name == "nvidia-h200.json"
    gemv = {"environment": env, "settings": {"problem": GEMV}}
    assert baseline_path(tmp_path, gemv).name == "nvidia-h200-nvfp4_gemv.json"
