"""Building kernel sources (`kernels/`) with nvcc through a generated ninja file, into a keyed cache.

A `BuildSpec` names what to build: compilation units (a source plus -D defines, one object each), a target
("sm_120a", "sm_100a", ... or "host" for a host-only program) and the product (a shared library loaded with
ctypes, or an executable). `build(spec)` returns the product's path:
  * the cache directory (default ~/.cache/fp4bench/build, or $FP4BENCH_CACHE_DIR) holds one directory per
    key. The key hashes what decides the product and nothing of where things lie: the spec, the compiler
    flags with the kernel-source, CUTLASS and overlay directories written as placeholders, the contents of
    every file of the spec's source directory (by relative path), the contents of the CUTLASS headers and
    of the header overlay, and the versions of nvcc, torch and CUTLASS. So a checkout, an installed wheel,
    a CI clone and the test suite (which builds into a temporary cache) compute the same key for the same
    kernel and target. A key whose manifest exists is a hit and loads without compiling;
  * `build_many(specs)` compiles every missing spec in one ninja invocation (`jobs` compilers over all their
    units) and reports each spec as it starts and finishes (`BuildEvent`s); `build(spec)` is one spec;
  * builds of one key are serialised by a file lock, so concurrent processes build it once;
  * a failed build raises `BuildError` carrying the kernel's name and the compiler's output in full.
Torch here may be a CPU build (its CUDA extension builder refuses without CUDA), and the products must
build on machines without a GPU; so nvcc is driven directly and the libraries export a plain C ABI.

CUTLASS headers come from the `nvidia-cutlass` wheel (or $FP4BENCH_CUTLASS_DIR, a directory holding
`include/`). CUTLASS before 4.4 lacks `alignas(16)` on the SM120 block-scaled mainloops' shared-memory
scale arrays (a 'misaligned address' crash on SM120; the plain and the grouped mainloop alike);
`header_overlay` writes patched copies of those headers into the cache and puts it first on the include
path. Headers that already carry the fix get no overlay; a header in neither known form stops SM120
builds with an explanation.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from .resources import kernel_source_dir

CACHE_ENV = "FP4BENCH_CACHE_DIR"
CUTLASS_ENV = "FP4BENCH_CUTLASS_DIR"
NVCC_ENV = "FP4BENCH_NVCC"
JOBS_ENV = "FP4BENCH_BUILD_JOBS"
MANIFEST = "manifest.json"
BUILD_LOG = "build.log"
HOST_TARGET = "host"
# Bump when the layout of a cache entry or the build recipe changes in a way the key cannot see.
# 2: keys no longer hash where the sources, the CUTLASS headers and the overlay lie, only what they hold.
RECIPE_VERSION = 2
# What the key reads in place of the directories on the include path (see `Toolchain.include_flags`).
KERNELS_PLACEHOLDER = "<kernels>"
OVERLAY_PLACEHOLDER = "<cutlass-overlay>"
CUTLASS_PLACEHOLDER = "<cutlass>"

NVCC_FLAGS = (
    "-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC",
    # CUTLASS's device code is heavy on templates; keep ptxas and cudafe quiet about what it cannot fix.
    "-diag-suppress=177,186,550",
)

# The SM120 block-scaled mainloop header and the fix CUTLASS 4.4 made to it.
SM120_MAINLOOP_HEADER = "cutlass/gemm/collective/sm120_blockscaled_mma_tma.hpp"
# Its grouped (ptr-array) twin has the same declarations and the same fix.
SM120_ARRAY_MAINLOOP_HEADER = "cutlass/gemm/collective/sm120_blockscaled_mma_array_tma.hpp"
SM120_MAINLOOP_HEADERS = (SM120_MAINLOOP_HEADER, SM120_ARRAY_MAINLOOP_HEADER)
_SF_DECL = re.compile(r"^(\s*)(cute::ArrayEngine<ElementSF, cute::cosize_v<SmemLayoutSF[AB]>> smem_SF[AB];)", re.M)
_SF_DECL_FIXED = re.compile(r"alignas\(16\) cute::ArrayEngine<ElementSF, cute::cosize_v<SmemLayoutSF([AB])>> smem_SF\1;")


class BuildError(RuntimeError):
    """A build failed; the message names the kernel and carries the compiler output."""


class ToolchainMissing(BuildError):
    """nvcc, ninja or the CUTLASS headers are not installed."""


@dataclass(frozen=True)
class BuildUnit:
    """One object file: a source under kernels/ compiled with some -D defines."""

    name: str                                   # object stem, unique within a spec
    source: str                                 # path relative to kernels/
    defines: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BuildSpec:
    name: str                                   # what the user knows it by (a kernel name)
    target: str                                 # "sm_120a", "sm_100a", ... or HOST_TARGET
    units: tuple[BuildUnit, ...]
    product: str = "shared"                     # "shared" (ctypes library) or "executable"
    source_dir: str = "cutlass"                 # every file here is hashed into the key
    needs_cutlass: bool = True
    extra_flags: tuple[str, ...] = field(default=())

    @property
    def product_name(self) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)
        return f"lib{stem}.so" if self.product == "shared" else stem

    def arch_flags(self) -> tuple[str, ...]:
        if self.target == HOST_TARGET:
            return ()
        m = re.fullmatch(r"sm_(\d+a?)", self.target)
        if not m:
            raise ValueError(f"unknown build target {self.target!r}; expected sm_XY, sm_XYa or {HOST_TARGET}")
        return ("-gencode", f"arch=compute_{m.group(1)},code=sm_{m.group(1)}")


# ---------------------------------------------------------------------------------------------- toolchain

def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fp4bench" / "build").expanduser()


def find_nvcc() -> str | None:
    explicit = os.environ.get(NVCC_ENV)
    if explicit:
        return explicit if Path(explicit).is_file() else None
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return None


def find_ninja() -> str | None:
    found = shutil.which("ninja")
    if found:
        return found
    try:
        import ninja  # the PyPI wheel carries the binary

        candidate = Path(ninja.BIN_DIR) / "ninja"
        return str(candidate) if candidate.is_file() else None
    except ImportError:
        return None


def find_cuobjdump() -> str | None:
    """cuobjdump beside nvcc, on PATH, or the copy Triton's wheel carries."""
    nvcc = find_nvcc()
    candidates = []
    if nvcc:
        real = Path(nvcc).resolve()
        candidates.append(real.parent / "cuobjdump")
    on_path = shutil.which("cuobjdump")
    if on_path:
        candidates.append(Path(on_path))
    try:
        import triton

        candidates.append(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")
    except ImportError:
        pass
    for c in candidates:
        if c.is_file():
            return str(c)
    return None


def cutlass_include_dir() -> Path | None:
    explicit = os.environ.get(CUTLASS_ENV)
    if explicit:
        inc = Path(explicit) / "include"
        return inc if (inc / "cutlass" / "cutlass.h").is_file() else None
    try:
        import cutlass_library
    except ImportError:
        return None
    inc = Path(cutlass_library.__file__).parent / "source" / "include"
    return inc if (inc / "cutlass" / "cutlass.h").is_file() else None


def cutlass_version(include: Path) -> str:
    text = (include / "cutlass" / "version.h").read_text()
    parts = [re.search(rf"#define CUTLASS_{p} (\d+)", text) for p in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) if m else "?" for m in parts)


@lru_cache(maxsize=None)
def nvcc_version(nvcc: str) -> str:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"release ([\d.]+), V([\d.]+)", out)
    return m.group(2) if m else out.strip().splitlines()[-1] if out.strip() else "unknown"


def torch_version() -> str:
    import torch

    return torch.__version__


def toolchain_problem(spec: BuildSpec | None = None) -> str | None:
    """Why nothing (or this spec) can be built here, or None."""
    if find_nvcc() is None:
        return "nvcc (the CUDA compiler) is not installed; set CUDA_HOME or FP4BENCH_NVCC"
    if find_ninja() is None:
        return "ninja is not installed (pip install ninja)"
    if (spec is None or spec.needs_cutlass) and cutlass_include_dir() is None:
        return f"CUTLASS headers not found (pip install nvidia-cutlass, or set {CUTLASS_ENV})"
    return None


# ----------------------------------------------------------------------------------- CUTLASS header fix

def patch_sm120_mainloop(text: str, name: str = SM120_MAINLOOP_HEADER) -> str | None:
    """The header with alignas(16) on the scale arrays; None if it already has it.

    Raises BuildError for a header in neither the known unfixed nor the fixed form.
    """
    if len(_SF_DECL_FIXED.findall(text)) == 2:
        return None
    patched, count = _SF_DECL.subn(r"\1alignas(16) \2", text)
    if count != 2:
        raise BuildError(f"{name} is in an unknown form: cannot apply the 16-byte alignment "
                         "fix of the shared-memory scale arrays (CUTLASS 4.4); use CUTLASS >= 4.4 headers "
                         f"through {CUTLASS_ENV}")
    return patched


def header_overlay(include: Path, root: Path | None = None, write: bool = True) -> Path | None:
    """A directory to put before the CUTLASS include path, holding the patched SM120 mainloop headers.

    None when every installed header already has the fix (a header the tree lacks is left alone).
    Content-addressed (the directory's name is a digest of the patched headers), so concurrent writers
    agree. `write=False` only names it (a cache lookup writes nothing).
    """
    patched: dict[str, str] = {}
    for name in SM120_MAINLOOP_HEADERS:
        original = include / name
        if original.is_file():
            text = patch_sm120_mainloop(original.read_text(), name)
            if text is not None:
                patched[name] = text
    if not patched:
        return None
    h = hashlib.sha256()
    for name, text in patched.items():
        h.update(name.encode())
        h.update(text.encode())
    overlay = (root or cache_root()) / f"cutlass-overlay-{h.hexdigest()[:16]}"
    for name, text in patched.items():
        target = overlay / name
        if write and not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(text)
            tmp.replace(target)
    return overlay


# ------------------------------------------------------------------------------------------ keys, files

def _hash_tree(h, directory: Path) -> None:
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(directory)).encode())
            h.update(p.read_bytes())


@lru_cache(maxsize=None)
def tree_digest(directory: str) -> str:
    """Digest of every file under `directory` (relative paths and contents); read once per process."""
    h = hashlib.sha256()
    if Path(directory).is_dir():
        _hash_tree(h, Path(directory))
    return h.hexdigest()


@dataclass(frozen=True)
class Toolchain:
    nvcc: str
    ninja: str
    cutlass_include: Path | None
    overlay: Path | None

    @classmethod
    def detect(cls, spec: BuildSpec) -> "Toolchain":
        problem = toolchain_problem(spec)
        if problem:
            raise ToolchainMissing(f"cannot build {spec.name}: {problem}")
        include = cutlass_include_dir() if spec.needs_cutlass else None
        overlay = header_overlay(include, write=False) if include is not None else None
        return cls(find_nvcc(), find_ninja(), include, overlay)

    def versions(self) -> dict[str, str]:
        v = {"nvcc": nvcc_version(self.nvcc), "torch": torch_version()}
        if self.cutlass_include is not None:
            v["cutlass"] = cutlass_version(self.cutlass_include)
        return v

    def include_flags(self, spec: BuildSpec, placeholders: bool = False) -> list[str]:
        """-I flags; with `placeholders`, the directories are named by role, not path (what the key hashes)."""
        kernels = KERNELS_PLACEHOLDER if placeholders else str(kernel_source_dir())
        flags = [f"-I{kernels}/{spec.source_dir}"]
        # The overlay must precede the CUTLASS tree so that its patched header wins.
        if self.overlay is not None:
            flags.append(f"-I{OVERLAY_PLACEHOLDER if placeholders else self.overlay}")
        if self.cutlass_include is not None:
            flags.append(f"-I{CUTLASS_PLACEHOLDER if placeholders else self.cutlass_include}")
        return flags

    def materialize(self) -> None:
        """Write the overlay that `detect` only named (before compiling against it)."""
        if self.overlay is not None:
            header_overlay(self.cutlass_include, self.overlay.parent)   # writes only what is missing


def compile_flags(spec: BuildSpec, tools: Toolchain, placeholders: bool = False) -> list[str]:
    return [*NVCC_FLAGS, *spec.arch_flags(), *tools.include_flags(spec, placeholders), *spec.extra_flags]


def build_key(spec: BuildSpec, tools: Toolchain) -> str:
    """The cache key: what decides the product, and nothing of where the inputs lie.

    Absolute paths (the kernel sources of a checkout or of an installed wheel, the CUTLASS headers of one
    environment or another, the overlay inside whichever cache) stay out of it; their contents go in.
    """
    h = hashlib.sha256()
    h.update(json.dumps({
        "recipe": RECIPE_VERSION, "name": spec.name, "target": spec.target, "product": spec.product,
        "units": [[u.name, u.source, list(map(list, u.defines))] for u in spec.units],
        "flags": compile_flags(spec, tools, placeholders=True), "versions": tools.versions(),
        # The overlay's name is the digest of the patched header it holds.
        "overlay": tools.overlay.name if tools.overlay is not None else None,
        "cutlass_headers": tree_digest(str(tools.cutlass_include)) if tools.cutlass_include else None,
    }, sort_keys=True).encode())
    src = kernel_source_dir()
    _hash_tree(h, src / spec.source_dir)
    # A unit whose source lies outside the spec's source directory: its contents too.
    for unit in spec.units:
        path = src / unit.source
        if not path.is_relative_to(src / spec.source_dir) and path.is_file():
            h.update(unit.source.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:20]


def build_dir(spec: BuildSpec, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", spec.name)
    return cache_root() / f"{safe}-{spec.target}-{key}"


def _ninja_escape(s: str) -> str:
    return s.replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


def _shell_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'" if re.search(r"[^\w@%+=:,./-]", s) else s


def link_command(spec: BuildSpec, tools: Toolchain, objects: list[str], product: str) -> list[str]:
    """The link step: the objects into a shared library or an executable."""
    shared = ["-shared"] if spec.product == "shared" else []
    return [tools.nvcc, *compile_flags(spec, tools), *shared, *objects, "-o", product]


def ninja_file(spec: BuildSpec, tools: Toolchain, *, root: Path | None = None, tag: str = "",
               events: Path | None = None, label: str | None = None) -> str:
    """The build.ninja text: one nvcc object per unit, then a link step (or a host program).

    As written into a cache entry (`root` None) its paths are relative to the entry, so `ninja -C ENTRY`
    rebuilds it. For one ninja invocation over several specs (`root` given) it holds the compile steps
    only, with absolute paths: `tag` keeps this spec's rules and variables apart from the others', `events`
    names a file each compile appends its description to as it starts (ninja reports edges as they
    finish), and `label` names the spec in the descriptions (default: its name). The batch links each
    spec itself, the moment its last object is done (ninja would run every link after every compile).
    """
    label = label or spec.name
    flags = " ".join(_shell_quote(f) for f in compile_flags(spec, tools))
    out = (lambda rel: _ninja_escape(str(root / rel))) if root is not None else (lambda rel: rel)
    start = f"printf '%s\\n' $name >> {_shell_quote(str(events))} && " if events is not None else ""
    lines = [] if tag else ["ninja_required_version = 1.3"]
    lines += [
        f"nvcc{tag} = {_shell_quote(tools.nvcc)}",
        f"flags{tag} = {flags}",
        f"rule cu{tag}",
        f"  command = {start}$nvcc{tag} $flags{tag} $defines -x cu -MD -MF $out.d -c $in -o $out",
        "  depfile = $out.d",
        "  description = nvcc $name",
    ]
    objects = []
    src_root = kernel_source_dir()
    for unit in spec.units:
        obj = out(f"obj/{unit.name}.o")
        objects.append(obj)
        defines = " ".join(_shell_quote(f"-D{k}={v}") for k, v in unit.defines)
        lines += [f"build {obj}: cu{tag} {_ninja_escape(str(src_root / unit.source))}",
                  f"  defines = {defines}",
                  f"  name = {_shell_quote(f'{label}:{unit.name}').replace('$', '$$')}"]
    if root is None:
        rule = "link_shared" if spec.product == "shared" else "link_exe"
        lines += [
            "rule link_shared",
            "  command = $nvcc $flags -shared $in -o $out",
            "  description = link $out",
            "rule link_exe",
            "  command = $nvcc $flags $in -o $out",
            "  description = link $out",
            f"build {spec.product_name}: {rule} {' '.join(objects)}",
            f"default {spec.product_name}",
        ]
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ build

@contextmanager
def _locked(path: Path, wait: bool = True):
    """An exclusive lock on the file `path` (filelock: fcntl on Linux); yields False, holding nothing, if
    another process holds it and `wait` is False."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def default_jobs() -> int:
    # CUTLASS block-scaled units take GBs of memory and minutes each: two at a time is the safe default.
    return int(os.environ.get(JOBS_ENV) or min(2, os.cpu_count() or 1))


def cached_product(spec: BuildSpec) -> Path | None:
    """The built product if the cache holds it for the current sources and toolchain, else None."""
    if toolchain_problem(spec):
        return None
    tools = Toolchain.detect(spec)
    d = build_dir(spec, build_key(spec, tools))
    return d / spec.product_name if (d / MANIFEST).is_file() else None


@dataclass(frozen=True)
class BuildEvent:
    """What `build_many` reports about one spec: "start", then "built" or "failed"; or "cached" alone.

    `seconds`: for "built" and "failed", from the spec's first compiler start to its end.
    """

    spec: BuildSpec
    kind: str
    seconds: float = 0.0
    path: Path | None = None
    error: BuildError | None = None


@dataclass
class _Job:
    """One spec to build in a batch, with everything fixed before ninja starts."""

    spec: BuildSpec
    tools: Toolchain
    key: str
    dir: Path
    versions: dict
    log: list[str] = field(default_factory=list)
    started: float | None = None
    done: bool = False

    @property
    def product(self) -> Path:
        return self.dir / self.spec.product_name

    @property
    def lock(self) -> Path:
        return self.dir.with_name(self.dir.name + ".lock")

    def complete(self) -> bool:
        return (self.dir / MANIFEST).is_file() and self.product.is_file()


def build(spec: BuildSpec, jobs: int | None = None, force: bool = False) -> Path:
    """Build `spec` (or find it in the cache) and return the path of its product; raises BuildError."""
    built, failures = build_many([spec], jobs, force)
    if spec in failures:
        raise failures[spec]
    return built[spec]


def build_many(specs: list[BuildSpec], jobs: int | None = None, force: bool = False,
               on_done: Callable[[BuildSpec], None] | None = None,
               progress: Callable[[BuildEvent], None] | None = None,
               ) -> tuple[dict[BuildSpec, Path], dict[BuildSpec, BuildError]]:
    """Build several specs; returns (products, failures), never raises BuildError.

    What the cache holds is reported "cached" at once; everything else compiles in one ninja invocation,
    `jobs` compilers at a time over the units of all specs (so one spec with many units and many specs
    with one unit each both keep every job busy). `progress(event)` hears each spec start and finish as
    it happens; `on_done(spec)` is called as each finishes.
    """
    jobs = jobs or default_jobs()
    built: dict[BuildSpec, Path] = {}
    failures: dict[BuildSpec, BuildError] = {}

    def emit(event: BuildEvent) -> None:
        if event.kind == "cached" or event.kind == "built":
            built[event.spec] = event.path
        elif event.kind == "failed":
            failures[event.spec] = event.error
        if progress is not None:
            progress(event)
        if on_done is not None and event.kind != "start":
            on_done(event.spec)

    pending: list[_Job] = []
    for spec in dict.fromkeys(specs):
        try:
            tools = Toolchain.detect(spec)
            key = build_key(spec, tools)
            job = _Job(spec, tools, key, build_dir(spec, key), tools.versions())
        except BuildError as e:
            emit(BuildEvent(spec, "failed", error=e))
            continue
        if job.complete() and not force:
            emit(BuildEvent(spec, "cached", path=job.product))
        else:
            pending.append(job)

    # Lock what we build (in one order, so two processes cannot deadlock); an entry another process holds
    # is waited for afterwards, and is then a hit (or, if that build failed, built here).
    later: list[_Job] = []
    with ExitStack() as stack:
        mine = []
        for job in sorted(pending, key=lambda j: j.dir.name):
            if not stack.enter_context(_locked(job.lock, wait=False)):
                later.append(job)
            elif job.complete() and not force:
                emit(BuildEvent(job.spec, "cached", path=job.product))
            else:
                mine.append(job)
        order = {id(j): i for i, j in enumerate(pending)}
        mine.sort(key=lambda j: order[id(j)])              # ninja takes them in the caller's order
        if mine:
            _run_batch(mine, jobs, force, emit)
    for job in later:
        with _locked(job.lock):
            if job.complete():
                emit(BuildEvent(job.spec, "cached", path=job.product))
            else:
                _run_batch([job], jobs, force, emit)
    return built, failures


_STATUS = re.compile(r"^\[\d+/\d+\] (nvcc .*)$")


def _run_batch(jobs_: list[_Job], jobs: int, force: bool, emit) -> None:
    """Compile `jobs_` (whose locks the caller holds) in one ninja invocation, reporting each as it goes.

    ninja runs every compile, `jobs` at a time, in the specs' order; each spec is linked here as soon as
    its last object is done, so kernels finish one after another rather than all at the end.
    """
    units: dict[str, tuple[_Job, str]] = {}          # "nvcc LABEL:UNIT" (an edge's description) -> job, unit
    waiting: dict[int, set[str]] = {}                # id(job) -> units not yet compiled
    ambiguous = len({j.spec.name for j in jobs_}) < len(jobs_)
    with tempfile.TemporaryDirectory(prefix="fp4bench-ninja-") as tmp:
        events = Path(tmp) / "started"
        events.touch()
        parts = ["ninja_required_version = 1.3"]
        for i, job in enumerate(jobs_):
            # Two specs of one name (two targets, two sets of defines): tell their edges apart.
            label = f"{job.spec.name}#{i}" if ambiguous else job.spec.name
            if force and job.dir.exists():
                shutil.rmtree(job.dir)
            job.dir.mkdir(parents=True, exist_ok=True)
            (job.dir / MANIFEST).unlink(missing_ok=True)
            job.tools.materialize()
            (job.dir / "build.ninja").write_text(ninja_file(job.spec, job.tools))
            parts.append(ninja_file(job.spec, job.tools, root=job.dir, tag=f"_{i}", events=events, label=label))
            for unit in job.spec.units:
                units[f"nvcc {label}:{unit.name}"] = (job, unit.name)
            waiting[id(job)] = {u.name for u in job.spec.units}
        (Path(tmp) / "build.ninja").write_text("\n".join(parts))
        targets = [str(j.dir / "obj" / f"{u.name}.o") for j in jobs_ for u in j.spec.units]
        cmd = [jobs_[0].tools.ninja, "-C", tmp, "-j", str(jobs), *(["-k", "0"] if len(jobs_) > 1 else []),
               *targets]
        begun = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "NINJA_STATUS": "[%f/%t] "})
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)],
                                  daemon=True)
        reader.start()
        general: list[str] = []          # ninja's own lines ("ninja: build stopped: ...")
        hook = re.compile(r"^printf '%s\\n' .*? >> " + re.escape(_shell_quote(str(events))) + " && ")
        current: list = [None, None, []]  # the edge whose output is arriving: job, unit, lines
        seen = 0

        def poll_started() -> None:
            nonlocal seen
            with open(events) as fh:
                fh.seek(seen)
                text = fh.read()
            complete = text[:text.rfind("\n") + 1]
            seen += len(complete)
            for name in complete.splitlines():
                job, _ = units.get(f"nvcc {name}", (None, None))
                if job is not None and job.started is None and not job.done:
                    job.started = time.monotonic()
                    emit(BuildEvent(job.spec, "start"))

        def close_edge() -> None:
            job, unit, text = current
            current[:] = [None, None, []]
            if job is None:
                return
            job.log += [hook.sub("", line, count=1) for line in text]   # the command as written alone
            if job.done:
                return
            poll_started()
            if any(line.startswith("FAILED: ") for line in text):
                _finish(job, begun, emit, ok=False)
                return
            waiting[id(job)].discard(unit)
            if not waiting[id(job)]:
                _finish(job, begun, emit, ok=_link(job))

        try:
            while True:
                try:
                    line = lines.get(timeout=0.25)
                except queue.Empty:
                    close_edge()   # ninja writes an edge's status and output in one burst
                    poll_started()
                    continue
                if line is None:
                    break
                line = line.rstrip("\n")
                m = _STATUS.match(line)
                if m and m.group(1) in units:
                    close_edge()
                    job, unit = units[m.group(1)]
                    current[:] = [job, unit, [line]]
                elif current[0] is not None and not line.startswith("ninja: "):
                    current[2].append(line)
                else:
                    general.append(line)
            close_edge()
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
        for job in jobs_:
            if not job.done:
                job.log += general
                _finish(job, begun, emit, ok=False)


def _link(job: _Job) -> bool:
    """Link a job's objects into its product; the step and any output go to its log."""
    objects = [str(job.dir / "obj" / f"{u.name}.o") for u in job.spec.units]
    cmd = link_command(job.spec, job.tools, objects, str(job.product))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    job.log.append(f"link {job.product}")
    if proc.returncode != 0:
        job.log += [f"FAILED: {job.product}", " ".join(_shell_quote(c) for c in cmd)]
    job.log += (proc.stdout + proc.stderr).rstrip("\n").splitlines()
    return proc.returncode == 0 and job.product.is_file()


def _finish(job: _Job, begun: float, emit, ok: bool) -> None:
    if job.started is None:          # finished before its start was seen (or never started): say both
        job.started = begun
        emit(BuildEvent(job.spec, "start"))
    job.done = True
    seconds = round(time.monotonic() - (job.started or begun), 1)
    log = "\n".join(job.log) + "\n"
    (job.dir / BUILD_LOG).write_text(log)
    if not ok:
        error = BuildError(f"building {job.spec.name} for {job.spec.target} failed "
                           f"(log: {job.dir / BUILD_LOG}):\n{log.rstrip()}")
        emit(BuildEvent(job.spec, "failed", seconds, error=error))
        return
    (job.dir / MANIFEST).write_text(json.dumps({
        "name": job.spec.name, "target": job.spec.target, "key": job.key, "product": job.spec.product_name,
        "units": [u.name for u in job.spec.units], "versions": job.versions,
        "overlay": str(job.tools.overlay) if job.tools.overlay else None,
        "seconds": seconds, "built_at": time.time(),
    }, indent=1))
    emit(BuildEvent(job.spec, "built", seconds, path=job.product))


# ------------------------------------------------------------------------------------------------ cache

@dataclass(frozen=True)
class CacheEntry:
    path: Path
    name: str
    target: str
    complete: bool
    bytes: int
    seconds: float | None


def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def cache_entries() -> list[CacheEntry]:
    root = cache_root()
    if not root.is_dir():
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("cutlass-overlay-")):
        manifest = d / MANIFEST
        meta = json.loads(manifest.read_text()) if manifest.is_file() else {}
        name, _, rest = d.name.rpartition("-")  # strip the key
        guess_name, _, guess_target = name.rpartition("-")
        out.append(CacheEntry(d, meta.get("name", guess_name), meta.get("target", guess_target),
                              manifest.is_file(), _dir_bytes(d), meta.get("seconds")))
    return out


def clear_cache(pattern: str | None = None) -> int:
    """Remove cache entries (all, or those whose name matches the glob); returns how many were removed."""
    import fnmatch

    removed = 0
    for entry in cache_entries():
        if pattern and not fnmatch.fnmatchcase(entry.name, pattern):
            continue
        with _locked(entry.path.with_name(entry.path.name + ".lock")):
            shutil.rmtree(entry.path, ignore_errors=True)
        entry.path.with_name(entry.path.name + ".lock").unlink(missing_ok=True)
        removed += 1
    if pattern is None:
        for overlay in cache_root().glob("cutlass-overlay-*"):
            shutil.rmtree(overlay, ignore_errors=True)
    return removed
