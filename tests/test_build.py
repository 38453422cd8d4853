"""The build system: keys, the ninja file, the CUTLASS header fix, the cache, locking, errors, CLI.

Builds here compile tiny host programs (seconds), in a temporary cache and a temporary source tree;
the CUTLASS kernels themselves are built by test_cutlass_blackwell.py and test_cutlass_layout.py.
"""

from __future__ import annotations

import subprocess
import threading

import pytest
from click.testing import CliRunner

from fp4bench import build as B
from fp4bench.cli import main

GOOD_SOURCE = '#include <cstdio>\nint main() { std::printf("%d\\n", VALUE * 6); return 0; }\n'
BROKEN_SOURCE = "int main() { return undefined_symbol_xyz; }\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(B.CACHE_ENV, str(root))
    return root


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """A kernels/ tree of our own, so that tests can edit sources freely."""
    src = tmp_path / "kernels"
    (src / "tiny").mkdir(parents=True)
    (src / "tiny" / "main.cpp").write_text(GOOD_SOURCE)
    monkeypatch.setattr(B, "kernel_source_dir", lambda: src)
    return src


def tiny_spec(value: int = 7, name: str = "tiny-probe") -> B.BuildSpec:
    return B.BuildSpec(name, B.HOST_TARGET, (B.BuildUnit("main", "tiny/main.cpp", (("VALUE", str(value)),)),),
                       product="executable", source_dir="tiny", needs_cutlass=False)


@pytest.fixture
def ninja_runs(monkeypatch):
    """Counts ninja invocations (real ones still run)."""
    calls = []
    real = subprocess.run

    def counting(cmd, *a, **kw):
        if cmd and str(cmd[0]).endswith("ninja"):
            calls.append(cmd)
        return real(cmd, *a, **kw)

    monkeypatch.setattr(B.subprocess, "run", counting)
    return calls


# ------------------------------------------------------------------------------------ no compiler needed

def test_arch_flags():
    assert B.BuildSpec("x", "sm_120a", ()).arch_flags() == ("-gencode", "arch=compute_120a,code=sm_120a")
    assert B.BuildSpec("x", "sm_100a", ()).arch_flags() == ("-gencode", "arch=compute_100a,code=sm_100a")
    assert B.BuildSpec("x", B.HOST_TARGET, ()).arch_flags() == ()
    with pytest.raises(ValueError):
        B.BuildSpec("x", "gfx942", ()).arch_flags()


def test_patch_adds_alignment_once():
    unfixed = ("    struct TensorStorage {\n"
               "      cute::ArrayEngine<ElementSF, cute::cosize_v<SmemLayoutSFA>> smem_SFA;\n"
               "      cute::ArrayEngine<ElementSF, cute::cosize_v<SmemLayoutSFB>> smem_SFB;\n")
    patched = B.patch_sm120_mainloop(unfixed)
    assert patched.count("alignas(16) cute::ArrayEngine<ElementSF") == 2
    assert "      alignas(16) cute::ArrayEngine<ElementSF, cute::cosize_v<SmemLayoutSFA>> smem_SFA;" in patched
    assert B.patch_sm120_mainloop(patched) is None          # already fixed: nothing to do
    with pytest.raises(B.BuildError, match="unknown form"):
        B.patch_sm120_mainloop("struct Nothing {};")


def test_installed_cutlass_header_gets_the_fix(cache):
    include = B.cutlass_include_dir()
    if include is None:
        pytest.skip("nvidia-cutlass is not installed")
    original = (include / B.SM120_MAINLOOP_HEADER).read_text()
    overlay = B.header_overlay(include)
    if B.patch_sm120_mainloop(original) is None:
        assert overlay is None                               # CUTLASS >= 4.4: nothing to patch
        return
    patched = (overlay / B.SM120_MAINLOOP_HEADER).read_text()
    assert patched.count("alignas(16) cute::ArrayEngine<ElementSF") == 2
    # Only the two declarations change.
    assert patched.replace("alignas(16) cute::ArrayEngine<ElementSF", "cute::ArrayEngine<ElementSF") == original
    assert overlay.parent == cache


def test_ninja_file_puts_the_overlay_first(sources, tmp_path):
    include, overlay = tmp_path / "cutlass" / "include", tmp_path / "overlay"
    tools = B.Toolchain("/opt/cuda/bin/nvcc", "/usr/bin/ninja", include, overlay)
    spec = B.BuildSpec("k", "sm_120a", (B.BuildUnit("u1", "tiny/main.cpp", (("FP4BENCH_CONFIG", "cfg_a"),)),
                                        B.BuildUnit("u2", "tiny/main.cpp", (("FP4BENCH_CONFIG", "cfg_b"),))),
                       source_dir="tiny")
    text = B.ninja_file(spec, tools)
    assert text.index(f"-I{overlay}") < text.index(f"-I{include}")
    assert "build obj/u1.o: cu" in text and "build obj/u2.o: cu" in text
    assert "-DFP4BENCH_CONFIG=cfg_a" in text and "arch=compute_120a,code=sm_120a" in text
    assert "build libk.so: link_shared obj/u1.o obj/u2.o" in text


def test_key_follows_sources_flags_and_toolchain(sources, monkeypatch):
    tools = B.Toolchain("/x/nvcc", "/x/ninja", None, None)
    monkeypatch.setattr(B, "nvcc_version", lambda nvcc: "13.0.88")
    k1 = B.build_key(tiny_spec(7), tools)
    assert B.build_key(tiny_spec(7), tools) == k1
    assert B.build_key(tiny_spec(8), tools) != k1                          # defines
    assert B.build_key(B.BuildSpec("tiny-probe", "sm_120a", tiny_spec().units, source_dir="tiny",
                                   needs_cutlass=False), tools) != k1      # target
    (sources / "tiny" / "helper.h").write_text("// a header the unit may include\n")
    k2 = B.build_key(tiny_spec(7), tools)
    assert k2 != k1                                                        # any file of the source dir
    monkeypatch.setattr(B, "nvcc_version", lambda nvcc: "13.1.80")
    assert B.build_key(tiny_spec(7), tools) != k2                          # toolchain version
    monkeypatch.setattr(B, "torch_version", lambda: "9.9.9")
    assert "9.9.9" in tools.versions()["torch"]


def test_missing_toolchain_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(B, "find_nvcc", lambda: None)
    with pytest.raises(B.ToolchainMissing, match="cannot build tiny-probe: nvcc"):
        B.build(tiny_spec())


def test_cli_rejects_bad_input():
    runner = CliRunner()
    res = runner.invoke(main, ["build", "--arch", "sm_999"])
    assert res.exit_code == 2 and "unknown target(s) sm_999" in res.output
    res = runner.invoke(main, ["build", "--kernels", "no-such-kernel-*"])
    assert res.exit_code == 2 and "no buildable kernel" in res.output


def test_cache_command_on_empty_cache(cache):
    res = CliRunner().invoke(main, ["cache"])
    assert res.exit_code == 0 and str(cache) in res.output and "empty" in res.output


# ---------------------------------------------------------------------------------------- with nvcc

@pytest.mark.nvcc
def test_build_then_cache_hit(cache, sources, ninja_runs):
    exe = B.build(tiny_spec(7))
    assert subprocess.run([str(exe)], capture_output=True, text=True).stdout.strip() == "42"
    assert len(ninja_runs) == 1 and (exe.parent / B.MANIFEST).is_file()
    assert B.build(tiny_spec(7)) == exe and len(ninja_runs) == 1           # hit: no compiler
    assert B.cached_product(tiny_spec(7)) == exe
    exe8 = B.build(tiny_spec(8))                                           # new key, new entry
    assert exe8 != exe and len(ninja_runs) == 2
    assert subprocess.run([str(exe8)], capture_output=True, text=True).stdout.strip() == "48"
    (sources / "tiny" / "main.cpp").write_text(GOOD_SOURCE.replace("* 6", "* 10"))
    assert B.cached_product(tiny_spec(7)) is None                          # source edit: a miss
    assert subprocess.run([str(B.build(tiny_spec(7)))], capture_output=True, text=True).stdout.strip() == "70"


@pytest.mark.nvcc
def test_concurrent_builds_of_one_key_compile_once(cache, sources, ninja_runs):
    results, errors = [], []

    def worker():
        try:
            results.append(B.build(tiny_spec(5)))
        except Exception as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and len(results) == 3
    assert len(ninja_runs) == 1


@pytest.mark.nvcc
def test_compiler_error_reaches_the_user_once_with_the_name(cache, sources):
    (sources / "tiny" / "main.cpp").write_text(BROKEN_SOURCE)
    with pytest.raises(B.BuildError) as info:
        B.build(tiny_spec(1, name="broken-kernel"))
    msg = str(info.value)
    assert msg.startswith("building broken-kernel for host failed")
    # The compiler's diagnostic appears once (ninja echoes it; we do not add a second copy).
    log = (B.cache_root() / next(p.name for p in B.cache_root().iterdir() if p.name.startswith("broken-kernel-")
                                 and p.is_dir()) / B.BUILD_LOG).read_text()
    assert log.count("undefined_symbol_xyz") >= 1
    assert msg.count("undefined_symbol_xyz") == log.count("undefined_symbol_xyz")
    assert B.cached_product(tiny_spec(1, name="broken-kernel")) is None   # failure is not a cache hit


@pytest.mark.nvcc
def test_cache_show_and_clear(cache, sources):
    B.build(tiny_spec(3))
    B.build(tiny_spec(4, name="other-probe"))
    runner = CliRunner()
    res = runner.invoke(main, ["cache"])
    assert res.exit_code == 0 and "tiny-probe" in res.output and "other-probe" in res.output
    assert "2 entries" in res.output
    res = runner.invoke(main, ["cache", "clear", "--kernels", "other-*"])
    assert res.exit_code == 0 and "removed 1 cache entry" in res.output
    assert [e.name for e in B.cache_entries()] == ["tiny-probe"]
    assert runner.invoke(main, ["cache", "clear"]).exit_code == 0
    assert B.cache_entries() == []


@pytest.mark.nvcc
def test_build_command_builds_and_reports_failures_once(cache, sources, monkeypatch):
    from fp4bench.commands import build as build_cmd

    (sources / "tiny" / "bad.cpp").write_text(BROKEN_SOURCE)
    bad = B.BuildSpec("bad-kernel", B.HOST_TARGET, (B.BuildUnit("bad", "tiny/bad.cpp"),), product="executable",
                      source_dir="tiny", needs_cutlass=False)
    monkeypatch.setattr(build_cmd, "buildable_specs", lambda: [tiny_spec(2), bad])
    monkeypatch.setattr(build_cmd, "KNOWN_TARGETS", build_cmd.KNOWN_TARGETS | {B.HOST_TARGET})
    res = CliRunner().invoke(main, ["build", "--kernels", "tiny-*"])
    assert res.exit_code == 0 and "ok      tiny-probe" in res.output
    res = CliRunner().invoke(main, ["build", "--arch", B.HOST_TARGET, "--kernels", "tiny-*,bad-*"])
    assert res.exit_code == 1
    assert "FAILED  bad-kernel" in res.output and "building bad-kernel for host failed" in res.output
    assert res.output.count("undefined_symbol_xyz") == (cache.glob("bad-kernel-*/build.log").__next__()
                                                         .read_text().count("undefined_symbol_xyz"))
    assert "ok      tiny-probe" in res.output          # the good one still built (a cache hit)
