"""The build system: keys, the ninja file, the CUTLASS header fix, the cache, locking, errors, CLI.

Builds here compile tiny host programs (seconds), in a temporary cache and a temporary source tree;
the CUTLASS kernels themselves are built by test_cutlass_blackwell.py and test_cutlass_layout.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from fp4bench import build as B
from fp4bench.cli import main
from fp4bench.kernels import cutlass_blackwell as cb

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
    real = subprocess.Popen

    def counting(cmd, *a, **kw):
        if cmd and str(cmd[0]).endswith("ninja"):
            calls.append(cmd)
        return real(cmd, *a, **kw)

    monkeypatch.setattr(B.subprocess, "Popen", counting)
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
    overlay = B.header_overlay(include)
    # The plain and the grouped (ptr-array) SM120 mainloop: each is patched, or already fixed.
    for name in B.SM120_MAINLOOP_HEADERS:
        original = (include / name).read_text()
        if B.patch_sm120_mainloop(original) is None:
            assert overlay is None or not (overlay / name).exists()    # CUTLASS >= 4.4: nothing to patch
            continue
        patched = (overlay / name).read_text()
        assert patched.count("alignas(16) cute::ArrayEngine<ElementSF") == 2, name
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


def test_a_held_build_lock_is_refused_without_waiting_and_free_after(tmp_path):
    path = tmp_path / "locks" / "entry.lock"
    with B._locked(path) as held:
        assert held is True
        with B._locked(path, wait=False) as again:
            assert again is False                 # another holder: no wait, nothing held
    with B._locked(path, wait=False) as free:
        assert free is True


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


# ------------------------------------------------------------------- one key whoever builds, wherever

def _fake_cutlass(root: Path, header_tail: str = "") -> Path:
    """A CUTLASS include tree with the SM120 mainloop header in its unfixed (pre-4.4) form."""
    inc = root / "include"
    (inc / "cutlass" / "gemm" / "collective").mkdir(parents=True)
    (inc / "cutlass" / "cutlass.h").write_text("// cutlass\n")
    (inc / "cutlass" / "version.h").write_text("#define CUTLASS_MAJOR 4\n#define CUTLASS_MINOR 2\n#define CUTLASS_PATCH 0\n")
    (inc / B.SM120_MAINLOOP_HEADER).write_text(
        "      cute::ArrayEngine<ElementSF, cute::cosize_v<SmemLayoutSFA>> smem_SFA;\n"
        "      cute::ArrayEngine<ElementSF, cute::cosize_v<SmemLayoutSFB>> smem_SFB;\n" + header_tail)
    return inc


def _key_where(monkeypatch, kernels, cutlass, cache, spec):
    monkeypatch.setattr(B, "kernel_source_dir", lambda: kernels)
    monkeypatch.setenv(B.CUTLASS_ENV, str(cutlass.parent))
    monkeypatch.setenv(B.CACHE_ENV, str(cache))
    tools = B.Toolchain.detect(spec)
    return B.build_key(spec, tools), tools


def test_key_does_not_depend_on_where_sources_cutlass_and_cache_lie(tmp_path, monkeypatch):
    """The tests' builds (a CI clone, a temporary cache) and the CLI's (a checkout or an installed wheel, the
    user's cache) used to get different keys for one kernel: the key hashed the compile flags, and those
    hold the absolute paths of kernels/, of the CUTLASS headers and of the overlay inside the cache."""
    from fp4bench.resources import kernel_source_dir

    monkeypatch.setattr(B, "find_nvcc", lambda: "/x/nvcc")
    monkeypatch.setattr(B, "find_ninja", lambda: "/x/ninja")
    monkeypatch.setattr(B, "nvcc_version", lambda nvcc: "13.0.88")
    B.tree_digest.cache_clear()
    # Two copies of the real kernel sources and of one CUTLASS tree, in different places, two caches.
    for side in ("checkout", "wheel"):
        shutil.copytree(kernel_source_dir(), tmp_path / side / "kernels")
        _fake_cutlass(tmp_path / side / "cutlass")
    for spec in [v.build_spec() for v in cb.VARIANTS] + [cb.LAYOUT_PROBE]:
        key_a, tools_a = _key_where(monkeypatch, tmp_path / "checkout" / "kernels",
                                    tmp_path / "checkout" / "cutlass" / "include", tmp_path / "cache-user", spec)
        key_b, tools_b = _key_where(monkeypatch, tmp_path / "wheel" / "kernels",
                                    tmp_path / "wheel" / "cutlass" / "include", tmp_path / "cache-tests", spec)
        assert tools_a.overlay != tools_b.overlay and tools_a.cutlass_include != tools_b.cutlass_include
        assert key_a == key_b, spec.name
        # The real flags still point at the real places; the key's name them by role only.
        assert f"-I{tools_b.overlay}" in B.compile_flags(spec, tools_b)
        assert str(tmp_path) not in " ".join(B.compile_flags(spec, tools_b, placeholders=True))
    assert not (tmp_path / "cache-user").exists()       # computing a key writes nothing (the overlay included)
    # What the headers hold still counts: one CUTLASS header edited, a new key.
    spec = cb.VARIANTS[0].build_spec()
    (tmp_path / "wheel" / "cutlass" / "include" / "cutlass" / "cutlass.h").write_text("// edited\n")
    B.tree_digest.cache_clear()
    key_edited, _ = _key_where(monkeypatch, tmp_path / "wheel" / "kernels",
                               tmp_path / "wheel" / "cutlass" / "include", tmp_path / "cache-tests", spec)
    assert key_edited != key_a
    # And so does the patched header the overlay holds (a different unfixed header, a different overlay).
    shutil.rmtree(tmp_path / "wheel" / "cutlass")
    _fake_cutlass(tmp_path / "wheel" / "cutlass", header_tail="// another release\n")
    B.tree_digest.cache_clear()
    key_other, tools_other = _key_where(monkeypatch, tmp_path / "wheel" / "kernels",
                                        tmp_path / "wheel" / "cutlass" / "include", tmp_path / "cache-tests", spec)
    assert tools_other.overlay.name != tools_a.overlay.name and key_other != key_a
    B.tree_digest.cache_clear()


@pytest.mark.nvcc
@pytest.mark.slow
@pytest.mark.cutlass_build(*(v.name for v in cb.VARIANTS))
def test_cli_finds_what_the_tests_built(cutlass_builds, tmp_path):
    """`fp4bench build` after the tests compiles nothing: run from an installed-wheel layout (fp4bench/_kernels,
    another directory than the checkout the tests import), into the session's cache, every kernel is cached."""
    import os
    import sys

    from fp4bench.commands import build as build_cmd
    from fp4bench.resources import kernel_source_dir

    specs = build_cmd.select_specs(None, "sm1*")
    assert {s.name for s in specs} == {v.name for v in cb.VARIANTS}
    for spec in specs:
        assert B.cached_product(spec) == cutlass_builds[spec.name], spec.name
    # An installed copy: the package with kernels/ inside it as _kernels, as the wheel lays it out.
    site = tmp_path / "site"
    package = Path(B.__file__).parent
    shutil.copytree(package, site / "fp4bench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(kernel_source_dir(), site / "fp4bench" / "_kernels")
    env = {**os.environ, "PYTHONPATH": str(site)}
    res = subprocess.run([sys.executable, "-m", "fp4bench", "build", "--kernels", "sm1*"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{site / 'fp4bench' / '_kernels'}" in subprocess.run(
        [sys.executable, "-c", "from fp4bench.resources import kernel_source_dir; print(kernel_source_dir())"],
        cwd=tmp_path, env=env, capture_output=True, text=True).stdout
    assert f"{len(specs)} kernels: 0 built, {len(specs)} cached, 0 failed" in res.stdout, res.stdout
    for spec in specs:
        assert f"ok      {spec.name:<20} {spec.target:<9}cached" in res.stdout


def test_suite_builds_into_a_temporary_cache():
    """conftest.py points the build cache (and the device cache, the same variable) at the session's
    temporary directory: nothing the suite builds lands in ~/.cache/fp4bench."""
    import os

    from fp4bench import device

    home_cache = Path.home() / ".cache" / "fp4bench"
    assert B.cache_root() == Path(os.environ[B.CACHE_ENV])
    for used in (B.cache_root(), device.cache_dir()):
        assert home_cache not in [used, *used.parents] and used.is_dir()


# --------------------------------------------------------------------------------- batches, progress

@pytest.mark.nvcc
def test_build_many_is_one_ninja_run_reporting_each_spec(cache, sources, ninja_runs):
    events = []
    specs = [tiny_spec(2, "probe-a"), tiny_spec(3, "probe-b"), tiny_spec(4, "probe-c")]
    built, failures = B.build_many(specs, jobs=2, progress=events.append)
    assert not failures and set(built) == set(specs) and len(ninja_runs) == 1
    for spec in specs:
        kinds = [e.kind for e in events if e.spec == spec]
        assert kinds == ["start", "built"], (spec.name, kinds)
        done = next(e for e in events if e.spec == spec and e.kind == "built")
        assert done.seconds > 0 and done.path == built[spec]
        assert subprocess.run([str(done.path)], capture_output=True, text=True).stdout.strip() == str(6 * int(
            spec.units[0].defines[0][1]))
        log = (done.path.parent / B.BUILD_LOG).read_text()
        assert f"nvcc {spec.name}:main" in log and "nvcc probe-" not in log.replace(f"nvcc {spec.name}:", "")
    # Again: all cached, no ninja; one of them forced: rebuilt alone.
    events.clear()
    built_again, _ = B.build_many(specs, progress=events.append)
    assert built_again == built and [e.kind for e in events] == ["cached"] * 3 and len(ninja_runs) == 1
    events.clear()
    B.build_many(specs[:1], force=True, progress=events.append)
    assert [e.kind for e in events] == ["start", "built"] and len(ninja_runs) == 2


@pytest.mark.nvcc
def test_one_failure_does_not_stop_the_others(cache, sources, ninja_runs):
    (sources / "tiny" / "bad.cpp").write_text(BROKEN_SOURCE)
    bad = B.BuildSpec("bad-kernel", B.HOST_TARGET, (B.BuildUnit("bad", "tiny/bad.cpp"),), product="executable",
                      source_dir="tiny", needs_cutlass=False)
    events = []
    built, failures = B.build_many([bad, tiny_spec(5)], progress=events.append)
    assert list(failures) == [bad] and list(built) == [tiny_spec(5)] and len(ninja_runs) == 1
    assert "undefined_symbol_xyz" in str(failures[bad]) and "undefined_symbol_xyz" not in \
        (built[tiny_spec(5)].parent / B.BUILD_LOG).read_text()
    assert [e.kind for e in events if e.spec == bad] == ["start", "failed"]
    assert "printf" not in str(failures[bad])        # the progress hook is not part of the command shown


def _events(spec_a, spec_b):
    return [B.BuildEvent(spec_a, "cached"), B.BuildEvent(spec_b, "start"), B.BuildEvent(spec_b, "built", 152.34)]


def test_progress_plain_lines_for_a_log():
    import io

    from fp4bench.commands.build import BuildLog
    from fp4bench.progress import WIDTH

    long = B.BuildSpec("a-kernel-with-a-name-far-longer-than-the-column", "sm_120a", ())
    a, b = B.BuildSpec("sm120-nvfp4", "sm_120a", ()), tiny_spec(1)
    out = io.StringIO()
    progress = BuildLog(4, stream=out, live=False)
    for e in _events(a, b) + [B.BuildEvent(long, "start"), B.BuildEvent(long, "failed", 3.0)]:
        progress(e)
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("ok      sm120-nvfp4          sm_120a  cached") and lines[0].endswith("1/4 done")
    assert lines[1].startswith("start   tiny-probe           host     1 unit")
    assert lines[2].startswith("ok      tiny-probe           host     built    152.3 s") and "2/4 done" in lines[2]
    assert lines[3].startswith("start   a-kernel-with-a-nam… sm_120a")
    assert lines[4].startswith("FAILED  a-kernel-with-a-nam… sm_120a  failed     3.0 s")
    assert lines[5].startswith("4 kernels: 1 built, 1 cached, 1 failed in ")
    assert len(lines) == 6                               # no progress lines of the display's own
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert all(len(line) <= WIDTH for line in lines)


def test_progress_on_a_terminal_names_what_compiles_on_the_bar(monkeypatch):
    import io

    from fp4bench.commands.build import BuildLog
    from fp4bench.progress import WIDTH

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=None: os.terminal_size((300, 40)))
    a, b = B.BuildSpec("sm120-nvfp4", "sm_120a", ()), tiny_spec(1)
    c = B.BuildSpec("sm100-" + "w" * 120, "sm_100a", ())
    out = Terminal()
    progress = BuildLog(3, stream=out)
    assert progress.progress.live
    for e in _events(a, b)[:2] + [B.BuildEvent(c, "start")]:
        progress(e)
    bar = out.getvalue().split("\r")[-1].replace("\x1b[?25l", "")   # (click hides the cursor)
    assert bar.startswith("building") and "1/3" in bar and "tiny-probe (host), sm100-www" in bar
    assert len(bar.rstrip()) <= WIDTH                   # a long list is cut to the width
    progress(_events(a, b)[2])
    progress(B.BuildEvent(c, "built", 1.0))
    progress.close()
    text = out.getvalue()
    assert "start   " not in text                        # on a terminal, starts are the bar's
    permanent = [seg.split("\n")[0] for seg in text.split("\r\x1b[K")[1:]]
    assert [line.split()[0] for line in permanent] == ["ok", "ok", "ok"]
    assert text.rstrip("\n").splitlines()[-1].startswith("3 kernels: 2 built, 1 cached, 0 failed in ")
    assert all(len(line) <= WIDTH for line in permanent)
