"""Test markers, and the build cache of a test session.

Markers: `gpu` tests need CUDA, `nvcc` tests need the CUDA compiler; both are skipped with the reason.

The build cache: the session builds into a temporary directory ($FP4BENCH_CACHE_DIR, set before the first
test and removed at the end), never into the user's ~/.cache/fp4bench; FP4BENCH_TEST_CACHE_DIR=DIR keeps
one across runs instead. Cache keys do not depend on the cache's location, so what the tests build is
what `fp4bench build` builds.

Random seeds: every test starts with torch's and Python's generators seeded by its own seed (the fixture
`random_seed`, autouse), derived from the session's base seed and the test's id alone, so a test draws the
same data whatever ran before it. The base seed is fresh each session (data drawn fresh) unless
FP4BENCH_TEST_SEED=N fixes it; it is in the session's header, and every failure reports the test's seed
and the command that reruns it with the same data.

`cutlass_build(*names)` marks a test that needs compiled CUTLASS products (the specs of `cutlass_specs()`
by name). When such a test is selected and nvcc is there, one background process starts as soon as
collection ends and compiles all of them in one ninja invocation ($FP4BENCH_BUILD_JOBS, default 2, jobs)
while the rest of the suite runs; the marked tests run last, through the session fixture `cutlass_builds`,
which waits for that build and prints each kernel as it finishes.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CACHE_ENV = "FP4BENCH_CACHE_DIR"            # fp4bench.build.CACHE_ENV, also the device ceilings' cache
KEEP_ENV = "FP4BENCH_TEST_CACHE_DIR"        # a build cache for the tests that outlives the session
SESSION_ENV = "FP4BENCH_TEST_SESSION_CACHE"  # set by the outermost session; nested sessions reuse it
SEED_ENV = "FP4BENCH_TEST_SEED"              # the session's base seed (default: a fresh one)


def cutlass_specs() -> dict:
    """Every compiled kernel library the tests use: the kernels' own specs (what `fp4bench build` builds: the
    CUTLASS variants and the sm90 CUDA library) and the CUTLASS layout probe."""
    from fp4bench.kernels import cutlass_blackwell as cb, sm90_wgmma

    specs = [v.build_spec() for v in cb.VARIANTS] + [cb.LAYOUT_PROBE, sm90_wgmma.LIBRARY]
    return {s.name: s for s in specs}


@dataclass
class _Session:
    root: Path
    owned: bool
    saved_env: dict
    names: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log: Path | None = None
    started: float = 0.0
    finished: float | None = None


_STATE = pytest.StashKey[_Session]()
_BASE_SEED = pytest.StashKey[int]()
_TEST_SEED = pytest.StashKey[int]()


def seed_for(base: int, nodeid: str) -> int:
    """A test's seed: its id and the session's base seed, nothing else (not the tests that ran before)."""
    digest = hashlib.blake2b(f"{base}:{nodeid}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


@pytest.fixture(autouse=True)
def random_seed(request) -> int:
    """This test's seed; torch's and Python's generators are seeded with it before the test runs."""
    import torch

    seed = seed_for(request.config.stash[_BASE_SEED], request.node.nodeid)
    request.node.stash[_TEST_SEED] = seed
    torch.manual_seed(seed)
    random.seed(seed)
    return seed


def pytest_report_header(config):
    base = config.stash[_BASE_SEED]
    return f"random seeds: {SEED_ENV}={base} (each test's seed derives from it and the test's id)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    seed = item.stash.get(_TEST_SEED, None)
    if report.failed and seed is not None:
        base = item.config.stash[_BASE_SEED]
        report.sections.append(("random seed", f"this test ran with seed {seed}; the same data again:\n"
                                               f"  {SEED_ENV}={base} python3 -m pytest '{item.nodeid}'"))


def pytest_configure(config):
    config.stash[_BASE_SEED] = int(os.environ.get(SEED_ENV) or int.from_bytes(os.urandom(4), "little"))
    saved = {k: os.environ.get(k) for k in (CACHE_ENV, SESSION_ENV)}
    keep, inherited = os.environ.get(KEEP_ENV), os.environ.get(SESSION_ENV)
    if keep:
        root, owned = Path(keep).expanduser(), False
        root.mkdir(parents=True, exist_ok=True)
    elif inherited:
        root, owned = Path(inherited), False
    else:
        root, owned = Path(tempfile.mkdtemp(prefix="fp4bench-test-cache-")), True
    os.environ[SESSION_ENV] = os.environ[CACHE_ENV] = str(root)
    config.stash[_STATE] = _Session(root, owned, saved)


def pytest_unconfigure(config):
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    if state.proc is not None and state.proc.poll() is None:
        os.killpg(state.proc.pid, signal.SIGTERM)      # its own process group: the process and its ninja
        state.proc.wait()
    if state.owned:
        shutil.rmtree(state.root, ignore_errors=True)
    for k, v in state.saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def pytest_collection_modifyitems(config, items):
    import torch

    has_gpu = torch.cuda.is_available()
    has_nvcc = shutil.which("nvcc") is not None
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch")
    skip_nvcc = pytest.mark.skip(reason="needs nvcc (the CUDA compiler) on PATH")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
        if "nvcc" in item.keywords and not has_nvcc:
            item.add_marker(skip_nvcc)
    # Tests of compiled CUTLASS products last: their build runs in the background until then.
    items.sort(key=lambda item: item.get_closest_marker("cutlass_build") is not None)


def pytest_collection_finish(session):
    config = session.config
    state = config.stash[_STATE]
    names: dict[str, None] = {}
    for item in session.items:
        if item.get_closest_marker("skip") is None:
            for mark in item.iter_markers("cutlass_build"):
                names.update(dict.fromkeys(mark.args))
    state.names = list(names)
    if not state.names or config.option.collectonly or shutil.which("nvcc") is None:
        return
    from fp4bench.build import toolchain_problem

    if toolchain_problem() is not None:
        return
    import fp4bench

    state.log = state.root / f"test-build-{os.getpid()}.log"
    package_parent = str(Path(fp4bench.__file__).resolve().parent.parent)   # the fp4bench under test
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
    # A process group of its own (to end it with its ninja and compilers), but not a session of its own: the
    # kernel's autogroups share the CPU fairly between sessions, which would undo the build's low priority.
    group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    with open(state.log, "w") as log:
        state.proc = subprocess.Popen([sys.executable, __file__, *state.names], stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env, cwd=package_parent, **group)
    state.started = time.monotonic()


def _build_in_background(names: list[str]) -> int:
    """The background build (this file run as a script): progress lines on stdout, as `fp4bench build` logs.

    At the lowest CPU priority (ninja and nvcc inherit it): the tests running meanwhile, some of which time
    things, keep the CPU they need; the compilers take what is left.
    """
    os.nice(19)
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):   # not Linux: the nice value alone
        pass
    from fp4bench.build import build_many
    from fp4bench.commands.build import BuildLog

    specs = cutlass_specs()
    progress = BuildLog(len(names), stream=sys.stdout, live=False)
    try:
        _, failures = build_many([specs[n] for n in names], progress=progress)
    finally:
        progress.close()
    return 1 if failures else 0


class _TerminalLines:
    """A stream for `BuildLog` that writes whole lines to pytest's terminal, past output capture."""

    def __init__(self, config, prefix: str):
        self.reporter = config.pluginmanager.get_plugin("terminalreporter")
        self.capture = config.pluginmanager.get_plugin("capturemanager")
        self.prefix, self.pending = prefix, ""

    def write(self, text: str) -> None:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        if lines and self.reporter is not None:
            with self.capture.global_and_fixture_disabled():
                self.reporter.ensure_newline()
                for line in lines:
                    self.reporter.write_line(self.prefix + line)

    def flush(self) -> None:
        pass


@pytest.fixture(scope="session")
def cutlass_builds(request) -> dict[str, Path]:
    """name -> product path for every CUTLASS build the selected tests need, compiled once a session."""
    from fp4bench.build import build_many
    from fp4bench.commands.build import BuildLog

    state = request.config.stash[_STATE]
    specs = cutlass_specs()
    names = state.names or list(specs)
    out = _TerminalLines(request.config, "cutlass build: ")
    if state.proc is not None:
        shown = 0
        if state.proc.poll() is None:
            out.write(f"waiting for the background build of {len(names)} CUTLASS products "
                      f"({time.monotonic() - state.started:.0f} s so far)\n")
        while True:
            running = state.proc.poll() is None
            text = state.log.read_text()
            complete = text[:text.rfind("\n") + 1]
            out.write(complete[shown:])
            shown = len(complete)
            if not running:
                break
            time.sleep(1.0)
        state.finished = time.monotonic()
    # Everything is a cache hit now; if the background build failed, this repeats it and reports the error.
    progress = BuildLog(len(names), stream=out, live=False) if state.proc is None else None
    built, failures = build_many([specs[n] for n in names], progress=progress)
    if progress is not None:
        progress.close()
    assert not failures, "\n".join(str(e) for e in failures.values())
    return {spec.name: path for spec, path in built.items()}


def pytest_terminal_summary(terminalreporter):
    state = terminalreporter.config.stash.get(_STATE, None)
    if state is None or state.proc is None or state.finished is None:
        return
    lines = state.log.read_text().strip().splitlines()
    terminalreporter.write_line(f"cutlass build (background, from the end of collection): "
                                f"{lines[-1] if lines else 'no output'}")


@pytest.fixture
def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def hopper_target():
    """The sm_90 GPU the Hopper kernels' GPU tests need; skips the test elsewhere."""
    from fp4bench.arch import current_target

    target = current_target("cuda")
    if target.arch != "sm_90a":
        pytest.skip(f"needs an sm_90 GPU; this is {target.arch}")
    return target


if __name__ == "__main__":
    sys.exit(_build_in_background(sys.argv[1:]))
