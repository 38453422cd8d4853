"""The portable Triton FP4 kernel (`triton-fp4`) end to end on the CPU, under TRITON_INTERPRET=1.

Triton decides at import whether `@triton.jit` compiles or interprets, so every check runs in a fresh
process with the variable set: the `fp4bench verify` command itself (fresh random data, poisoned output,
the exact reference), and in-process asserts that the check can fail (a corrupted scale is caught).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# Edge cases the interpreter gets through in seconds: a single row, M/N off the 128 tiles, K/16 and K/32
# not multiples of 4, batches, and several K tiles (split-K).
EDGE_SHAPES_YAML = textwrap.dedent("""\
    - {m: 1, n: 48, k: 256}
    - {m: 77, n: 40, k: 96}
    - {m: 130, n: 33, k: 32}
    - {m: 20, n: 72, k: 1056}
    - {m: 48, n: 64, k: 512, l: 3}
""")
N_SHAPES = 5
N_FORMATS = 4   # nvfp4, mxfp4, w4a16-nvfp4, w4a16-mxfp4


def run_interpreted(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, TRITON_INTERPRET="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_verify_command_passes_triton_fp4_on_cpu(tmp_path):
    shapes = tmp_path / "edges.yml"
    shapes.write_text(EDGE_SHAPES_YAML)
    proc = run_interpreted(["-m", "fp4bench", "verify", "--kernel", "triton-fp4", "--format", "all",
                            "--device", "cpu", "--shapes", str(shapes), "--seeds", "2"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("triton-fp4")]
    assert sum(" PASS " in ln for ln in lines) == N_SHAPES * N_FORMATS, proc.stdout
    assert f"{N_SHAPES * N_FORMATS} passed, 0 failed" in proc.stdout


def test_interpreted_kernel_is_exact_and_a_corrupted_scale_is_caught():
    script = textwrap.dedent("""
        import torch
        from fp4bench.checking import check_output
        from fp4bench.formats import GEMM_FORMATS
        from fp4bench.kernels import get_kernel
        from fp4bench.problem import Shape, generate, poison_output
        from fp4bench.reference import reference_gemm

        kernel = get_kernel("triton-fp4")
        fmt = GEMM_FORMATS["nvfp4"]
        p = generate(Shape(64, 96, 512, seed=123), fmt)
        fn = kernel.prepare(p)
        out = fn(poison_output(p).data)
        exact = check_output(out, reference_gemm(p), fmt.out_dtype)
        # NVFP4 products and fp32 sums of these sizes are exact: fp16 rounding is the only error allowed.
        assert exact.passed and exact.max_abs_err <= 0.5 * (reference_gemm(p).abs().max().item() * 2**-10), exact

        # Corrupt one block scale in the permuted bytes the kernel reads: its row must now mismatch.
        sfb_perm = p.data[5]
        sfb_perm[0, 0, 0, 0, 0, 0] = torch.tensor(7.0).to(sfb_perm.dtype)
        bad = check_output(fn(poison_output(p).data), reference_gemm(p.with_c(p.c)), fmt.out_dtype)
        # The reference reads the row-major scales, which still hold the original value.
        assert not bad.passed, "a wrong scale byte went unnoticed"
        print("OK")
    """)
    proc = run_interpreted(["-c", script])
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr


def test_cpu_without_interpreter_is_skipped_with_a_reason():
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("this process interprets Triton")
    from fp4bench.arch import CPU
    from fp4bench.kernels import get_kernel

    reason = get_kernel("triton-fp4").unavailable_reason(CPU)
    assert reason and "TRITON_INTERPRET=1" in reason
    assert "sm_90" in str(get_kernel("sm90-nvfp4").archs)
    assert get_kernel("sm90-nvfp4").unavailable_reason(CPU)


def test_run_times_triton_fp4_through_the_timed_checks_on_cpu(tmp_path):
    # The timed calls' input sets are refilled and replaced between batches and sampled outputs checked
    # (fp4bench.audit): the kernel's own caches (workspaces, launch configurations) must keep it right.
    shapes = tmp_path / "tiny.yml"
    shapes.write_text("- {m: 16, n: 32, k: 128}\n- {m: 20, n: 40, k: 64, l: 2}\n")
    proc = run_interpreted(["-m", "fp4bench", "run", "--kernels", "triton-fp4", "--format", "nvfp4,w4a16-mxfp4",
                            "--device", "cpu", "--shapes", str(shapes), "--budget", "0.05", "--min-samples", "2",
                            "--isolation", "none", "-q"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 passed, 0 failed, 0 errors, 0 skipped" in proc.stdout
