"""Every bad input gets one clear line and exit code 2, never a traceback: shape files, sizes, memory,
kernels, formats, GPU ids and submission files. Through the real command line (click's runner)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fp4bench.arch import Target
from fp4bench.cli import main
from fp4bench.commands import common
from fp4bench.errors import InputError
from fp4bench.formats import gemm_format
from fp4bench.pipeline import case_bytes
from fp4bench.problem import Shape

PLANTED = Path(__file__).parent / "fixtures" / "kernels"
GOOD_SHAPES = "shapes:\n  - {m: 64, n: 64, k: 128}\n"


def run_cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def assert_one_line_exit_2(code: int, output: str, *words: str) -> None:
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    assert "Traceback" not in output
    for w in words:
        assert w in lines[0], (w, lines[0])


SHAPE_FILES = {
    "malformed": ("shapes: [ {m: 1, n: 2", "malformed YAML"),
    "empty": ("", "holds no shapes"),
    "comment_only": ("# nothing here\n", "holds no shapes"),
    "scalar": ("42\n", "expected a list of shapes"),
    "missing_key": ("- {m: 64, n: 64}\n", "missing key k"),
    "non_integer": ("- {m: 64, n: sixty, k: 128}\n", "n must be an integer, got 'sixty'"),
    "float": ("- {m: 64.5, n: 64, k: 128}\n", "m must be an integer"),
    "zero": ("- {m: 0, n: 64, k: 128}\n", "m must be positive, got 0"),
    "negative": ("- {m: 64, n: -8, k: 128}\n", "n must be positive, got -8"),
    "negative_l": ("- {m: 64, n: 8, k: 128, l: -1}\n", "l must be positive"),
    "unknown_key": ("- {m: 64, n: 64, k: 128, q: 1}\n", "unknown key q"),
    "not_a_mapping": ("- [64, 64, 128]\n", "expected a mapping"),
}


@pytest.mark.parametrize("command", ["verify", "run"])
@pytest.mark.parametrize("name", sorted(SHAPE_FILES))
def test_bad_shape_files(tmp_path, command, name):
    text, message = SHAPE_FILES[name]
    path = tmp_path / f"{name}.yml"
    path.write_text(text)
    code, out = run_cli(command, "--shapes", path, "--kernel", "torch-ref", "--device", "cpu")
    assert_one_line_exit_2(code, out, message)


def test_missing_shape_file(tmp_path):
    code, out = run_cli("verify", "--shapes", tmp_path / "nope.yml", "--device", "cpu")
    assert_one_line_exit_2(code, out, "cannot read shape file")


@pytest.mark.parametrize("fmt, k, block", [("nvfp4", 100, 16), ("mxfp4", 48, 32)])
def test_k_not_a_multiple_of_the_block(tmp_path, fmt, k, block):
    path = tmp_path / "k.yml"
    path.write_text(f"- {{m: 64, n: 64, k: {k}}}\n")
    code, out = run_cli("verify", "--shapes", path, "--format", fmt, "--kernel", "torch-ref", "--device", "cpu")
    assert_one_line_exit_2(code, out, f"K={k} is not a multiple of {block}", fmt)


def test_shape_beyond_memory_through_run(tmp_path):
    # Needs far more than any machine has: refused before anything is allocated.
    path = tmp_path / "huge.yml"
    path.write_text("- {m: 1048576, n: 1048576, k: 1024}\n")
    code, out = run_cli("run", "--shapes", path, "--kernel", "torch-ref", "--device", "cpu", "--isolation", "none")
    assert_one_line_exit_2(code, out, "needs about", "GiB", "host RAM available")


def test_memory_message_with_a_mocked_gpu(monkeypatch):
    h200 = Target("cuda", 0, (9, 0), "NVIDIA H200")
    shape = Shape(16384, 16384, 16384)
    need = case_bytes(shape, gemm_format("nvfp4"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (8 * 2**30, 141 * 2**30))
    with pytest.raises(InputError) as e:
        common.check_shapes_fit([Shape(128, 256, 256), shape], [gemm_format("nvfp4")], h200)
    assert str(e.value.message) == (f"shape 16384x16384x16384 (nvfp4) needs about {need / 2**30:.1f} GiB; "
                                    "only 8.0 GiB free on NVIDIA H200 (sm_90a)")
    # The same shapes fit once enough is free; a small shape never trips it.
    common.check_shapes_fit([shape], [gemm_format("nvfp4")], h200, free_bytes=need + 1)
    common.check_shapes_fit([Shape(128, 256, 256)], [gemm_format("nvfp4")], h200, free_bytes=64 * 2**20)


def test_memory_estimate_grows_with_every_dimension():
    fmt = gemm_format("nvfp4")
    base = case_bytes(Shape(256, 256, 256), fmt)
    for bigger in (Shape(512, 256, 256), Shape(256, 512, 256), Shape(256, 256, 512), Shape(256, 256, 256, 2)):
        assert case_bytes(bigger, fmt) > base


@pytest.mark.parametrize("args, words", [
    (("--kernel", "no-such-kernel"), ("unknown kernel 'no-such-kernel'", "torch-ref")),
    (("--kernel", "zzz*"), ("unknown kernel 'zzz*'",)),
    (("--format", "nvfp5"), ("nvfp5",)),
])
@pytest.mark.parametrize("command", ["verify", "run"])
def test_unknown_kernel_or_format(tmp_path, command, args, words):
    path = tmp_path / "s.yml"
    path.write_text(GOOD_SHAPES)
    code, out = run_cli(command, "--shapes", path, "--device", "cpu", *args)
    assert_one_line_exit_2(code, out, *words)


def test_unknown_gpu_ids(monkeypatch):
    from fp4bench.commands import run as run_cmd

    with pytest.raises(InputError, match="GPU id must be 0 or more"):
        common.resolve_target("cuda", -1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(InputError, match="GPU 7 does not exist; this machine has 2"):
        common.resolve_target("cuda", 7)
    import fp4bench.device as device

    monkeypatch.setattr(device, "query_devices", lambda: [object(), object()])
    for value, message in (("5", "no GPU 5; this machine has 2"), ("-1", "no GPU -1"),
                           ("one", "expected 'all' or a comma-separated list")):
        with pytest.raises(InputError, match=message):
            run_cmd.parse_gpus(value, "cuda")
    assert run_cmd.parse_gpus("1,0", "cuda") == [0, 1]


def test_gpus_on_a_cpu_run(tmp_path):
    path = tmp_path / "s.yml"
    path.write_text(GOOD_SHAPES)
    code, out = run_cli("run", "--shapes", path, "--kernel", "torch-ref", "--device", "cpu", "--gpus", "3")
    assert_one_line_exit_2(code, out, "--gpus needs --device cuda")


def test_cuda_requested_without_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "s.yml"
    path.write_text(GOOD_SHAPES)
    code, out = run_cli("verify", "--shapes", path, "--kernel", "torch-ref", "--device", "cuda")
    assert_one_line_exit_2(code, out, "no CUDA device is available")


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "missing.py", ("does not exist",)),
    (lambda d: (d / "folder.py").mkdir() or d / "folder.py", ("does not exist",)),
    (lambda d: PLANTED / "not_a_kernel.txt", ("is not a Python file",)),
    (lambda d: PLANTED / "not_python.py", ("is not valid Python", "line 1")),
    (lambda d: PLANTED / "no_custom_kernel.py", ("defines no custom_kernel(data) function",)),
    (lambda d: (d / "import_bug.py").write_text("x = undefined_name\n") and d / "import_bug.py",
     ("failed to import", "NameError", "undefined_name")),
    (lambda d: (d / "no_sibling.py").write_text("from utils import helper\n") and d / "no_sibling.py",
     ("failed to import", "utils")),
])
@pytest.mark.parametrize("command", ["verify", "run"])
def test_bad_kernel_files(tmp_path, command, make, words):
    shapes = tmp_path / "s.yml"
    shapes.write_text(GOOD_SHAPES)
    kernel = make(tmp_path)
    code, out = run_cli(command, "--shapes", shapes, "--device", "cpu", "--kernel", kernel)
    assert_one_line_exit_2(code, out, *words)


ENVIRONMENT_FAILURES = {
    "missing_package": ("import no_such_module_xyz\n", "needs the Python package 'no_such_module_xyz'"),
    "no_toolchain": ("raise OSError('CUDA_HOME environment variable is not set')\n", "CUDA_HOME"),
    "no_blackwell": ("raise RuntimeError('this kernel needs sm_100a (Blackwell)')\n", "sm_100a"),
}


@pytest.mark.parametrize("name", sorted(ENVIRONMENT_FAILURES))
@pytest.mark.parametrize("command", ["verify", "run"])
def test_an_import_that_fails_for_the_machine_is_a_skip_with_exit_4(tmp_path, command, name):
    """Not bad input: the submission may be fine on the machine it was written for."""
    text, words = ENVIRONMENT_FAILURES[name]
    shapes = tmp_path / "s.yml"
    shapes.write_text(GOOD_SHAPES)
    kernel = tmp_path / f"{name}.py"
    kernel.write_text(text + "def custom_kernel(data):\n    return data[6]\n")
    code, out = run_cli(command, "--shapes", shapes, "--device", "cpu", "--kernel", kernel)
    assert code == 4, out
    assert "Traceback" not in out and not any(line.startswith("Error:") for line in out.splitlines())
    assert "skipped" in out and "cannot be imported on this machine" in out and words in out


def test_resume_without_json(tmp_path):
    shapes = tmp_path / "s.yml"
    shapes.write_text(GOOD_SHAPES)
    code, out = run_cli("run", "--shapes", shapes, "--device", "cpu", "--kernel", "torch-ref", "--resume")
    assert_one_line_exit_2(code, out, "--resume needs --json")


def test_resume_from_a_corrupt_file(tmp_path):
    shapes = tmp_path / "s.yml"
    shapes.write_text(GOOD_SHAPES)
    results = tmp_path / "r.json"
    results.write_text(textwrap.dedent("""{"truncated": """))
    code, out = run_cli("run", "--shapes", shapes, "--device", "cpu", "--kernel", "torch-ref", "--resume",
                        "--json", results)
    assert_one_line_exit_2(code, out, "--resume", "not JSON")


def test_a_competition_task_file_is_a_shape_file(tmp_path):
    """The competition's task.yml holds lists of files and templates beside its tests and benchmarks."""
    from fp4bench.shapes import load_shapes

    task = tmp_path / "task.yml"
    task.write_text('files:\n  - {"name": "submission.py", "source": "@SUBMISSION@"}\nlang: "py"\n'
                    'description: |\n  text\nconfig:\n  main: "eval.py"\n'
                    'tests:\n  - {"m": 128, "n": 256, "k": 256, "l": 1, "seed": 1111}\n'
                    'benchmarks:\n  - {"m": 128, "n": 7168, "k": 2048, "l": 1, "seed": 1111}\n')
    shapes = load_shapes(task)
    assert [str(s) for s in shapes] == ["128x256x256", "128x7168x2048"]
    assert [str(s) for s in load_shapes(task, ("benchmarks",))] == ["128x7168x2048"]
    # Other groups of shapes beside tests and benchmarks stay (the bundled task.yml has a decode group).
    assert len(load_shapes("task")) == 22 and len(load_shapes("task", ("decode",))) == 9
