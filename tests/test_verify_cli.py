"""`fp4bench verify` end to end through click's runner: passes, planted bugs, and bad input."""

from __future__ import annotations

import textwrap

import pytest
import torch
from click.testing import CliRunner

from fp4bench.cli import main

SMALL = textwrap.dedent("""\
    shapes:
      - {m: 64, n: 80, k: 128}
      - {m: 130, n: 33, k: 64, l: 2}
    """)

SHIFTED_SCALES = textwrap.dedent("""\
    # A planted bug: each block's scale is taken from the next block (the classic off-by-one-block).
    import torch
    from fp4bench.formats import GEMM_FORMATS, SCALE_E8M0
    from fp4bench.codecs import dequantize

    def custom_kernel(data):
        a, b, sfa, sfb, _, _, c = data
        fmt = GEMM_FORMATS["mxfp4" if sfa.dtype == SCALE_E8M0.dtype else "nvfp4"]
        for i in range(c.shape[2]):
            shifted = torch.roll(sfa[:, :, i].contiguous().view(torch.uint8), 1, dims=1).view(sfa.dtype)
            da = dequantize(a[:, :, i], shifted, fmt.a)
            db = dequantize(b[:, :, i], sfb[:, :, i], fmt.b)
            c[:, :, i] = (da[:, None, :] * db[None, :, :]).sum(-1).to(c.dtype)
        return c
    """)

# Honest plain torch: the products summed elementwise (a torch matmul would be the vendor's GEMM).
CORRECT_SUBMISSION = textwrap.dedent("""\
    from fp4bench.formats import GEMM_FORMATS, SCALE_E8M0
    from fp4bench.codecs import dequantize

    def custom_kernel(data):
        a, b, sfa, sfb, _, _, c = data
        fmt = GEMM_FORMATS["mxfp4" if sfa.dtype == SCALE_E8M0.dtype else "nvfp4"]
        for i in range(c.shape[2]):
            da = dequantize(a[:, :, i], sfa[:, :, i], fmt.a)
            db = dequantize(b[:, :, i], sfb[:, :, i], fmt.b)
            c[:, :, i] = (da[:, None, :] * db[None, :, :]).sum(-1).to(c.dtype)
        return c
    """)


@pytest.fixture
def shapes_file(tmp_path):
    p = tmp_path / "small.yml"
    p.write_text(SMALL)
    return str(p)


def invoke(*args):
    return CliRunner().invoke(main, ["verify", *args])


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4", "w4a8", "mxfp8"])
def test_torch_kernel_passes(shapes_file, fmt):
    r = invoke("--shapes", shapes_file, "--kernel", "torch-ref", "--format", fmt, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output and "FAIL" not in r.output
    assert "2 passed, 0 failed" in r.output


def test_mxfp8_verify_on_cpu_passes_and_names_why_the_hopper_kernels_do_not_run(shapes_file):
    r = invoke("--shapes", shapes_file, "--format", "mxfp8", "--device", "cpu", "--seeds", "1")
    assert r.exit_code == 0, r.output
    assert "2 passed, 0 failed, 0 errors, 8 skipped" in r.output
    assert "needs sm_90; this machine has no GPU: sm90-mxfp8 (mxfp8) x2, sm90-mxfp8-fp8 (mxfp8) x2" in r.output
    assert "needs sm_120; this machine has no GPU: sm120-mxfp8 (mxfp8) x2" in r.output


def test_bundled_verify_set_passes_on_cpu():
    r = invoke("--kernel", "torch-ref", "--format", "nvfp4,mxfp4,w4a8", "--device", "cpu", "--seeds", "1")
    assert r.exit_code == 0, r.output
    assert "24 passed, 0 failed" in r.output


def test_correct_submission_file_passes(shapes_file, tmp_path):
    sub = tmp_path / "good_submission.py"
    sub.write_text(CORRECT_SUBMISSION)
    r = invoke("--shapes", shapes_file, "--kernel", str(sub), "--device", "cpu")
    assert r.exit_code == 0, r.output


def test_a_torch_matmul_submission_is_the_vendor_path_unless_strictness_is_off(shapes_file, tmp_path):
    sub = tmp_path / "matmul_submission.py"
    sub.write_text(CORRECT_SUBMISSION.replace("(da[:, None, :] * db[None, :, :]).sum(-1)", "(da @ db.T)"))
    r = invoke("--shapes", shapes_file, "--kernel", str(sub), "--device", "cpu")
    assert r.exit_code == 1, r.output
    assert "vendor-gemm: dense torch matmuls (torch.matmul x1) do 100% of the problem's FLOPs" in " ".join(r.output.split())
    r = invoke("--shapes", shapes_file, "--kernel", str(sub), "--device", "cpu", "--no-strict-submission")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_planted_scale_shift_fails_with_exit_1(shapes_file, tmp_path, fmt):
    sub = tmp_path / "shifted.py"
    sub.write_text(SHIFTED_SCALES)
    r = invoke("--shapes", shapes_file, "--kernel", str(sub), "--format", fmt, "--device", "cpu")
    assert r.exit_code == 1, r.output
    assert "FAIL" in r.output and "mismatch" in r.output


def assert_one_line_error(r, fragment):
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("Error:") and fragment in lines[0], lines[0]
    assert "Traceback" not in r.output


def test_malformed_yaml(tmp_path):
    p = tmp_path / "bad.yml"
    p.write_text("shapes:\n  - {m: 1, n: [\n")
    assert_one_line_error(invoke("--shapes", str(p), "--device", "cpu"), "malformed YAML")


def test_k_not_multiple_of_block(tmp_path):
    p = tmp_path / "k.yml"
    p.write_text("- {m: 16, n: 16, k: 40}\n")
    assert_one_line_error(invoke("--shapes", str(p), "--device", "cpu"), "not a multiple of 16")
    p.write_text("- {m: 16, n: 16, k: 48}\n")
    assert_one_line_error(invoke("--shapes", str(p), "--format", "mxfp4", "--device", "cpu"), "not a multiple of 32")


def test_unknown_kernel_and_format(shapes_file):
    assert_one_line_error(invoke("--shapes", shapes_file, "--kernel", "no-such-kernel", "--device", "cpu"),
                          "unknown kernel 'no-such-kernel'")
    assert_one_line_error(invoke("--shapes", shapes_file, "--format", "fp3", "--device", "cpu"),
                          "unknown format 'fp3'")


def test_missing_shape_file_and_missing_keys(tmp_path):
    assert_one_line_error(invoke("--shapes", str(tmp_path / "nope.yml"), "--device", "cpu"), "cannot read")
    p = tmp_path / "keys.yml"
    p.write_text("- {m: 16, n: 16}\n")
    assert_one_line_error(invoke("--shapes", str(p), "--device", "cpu"), "missing key k")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_an_input_error(shapes_file):
    assert_one_line_error(invoke("--shapes", shapes_file, "--device", "cuda"), "no CUDA device")


def test_a_submission_as_downloaded_imports_task(shapes_file, tmp_path):
    """Real submissions start with `from task import input_t, output_t`: fp4bench provides that module."""
    sub = tmp_path / "submission.py"
    sub.write_text("from task import input_t, output_t\n" + CORRECT_SUBMISSION.replace(
        "def custom_kernel(data):", "def custom_kernel(data: input_t) -> output_t:"))
    r = invoke("--shapes", shapes_file, "--kernel", str(sub), "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "2 passed, 0 failed" in r.output
