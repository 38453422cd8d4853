"""Building kernel sources (`kernels/`) with nvcc through a generated ninja file, into a keyed cache.

A `BuildSpec` names what to build: compilation units (a source plus -D defines, one object each), a target
("sm_120a", "sm_100a", ... or "host" for a host-only program) and the product (a shared library loaded with
ctypes, or an executable). `build(spec)` returns the product's path:
  * the cache directory (default ~/.cache/fp4bench/build, or $FP4BENCH_CACHE_DIR) holds one directory per
    key; the key hashes the spec, the compiler flags, every file of the spec's source directory, the CUTLASS
    header overlay, and the versions of nvcc, torch and CUTLASS. A key whose manifest exists is a hit and
    loads without compiling;
  * builds of one key are serialised by an fcntl lock, so concurrent processes build it once;
  * a failed build raises `BuildError` carrying the kernel's name and the compiler's output in full.
Torch here may be a CPU build (its CUDA extension builder refuses without CUDA), and the products must
build on machines without a GPU; so nvcc is driven directly and the libraries export a plain C ABI.

CUTLASS headers come from the `nvidia-cutlass` wheel (or $FP4BENCH_CUTLASS_DIR, a directory holding
`include/`). CUTLASS before 4.4 lacks `alignas(16)` on the SM120 block-scaled mainloop's shared-memory
scale arrays (a 'misaligned address' crash on SM120); `header_overlay` writes a patched copy of that one
header into the cache and puts it first on the include path. Headers that already carry the fix get no
overlay; a header in neither known form stops SM120 builds with an explanation.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .resources import kernel_source_dir

CACHE_ENV = "FP4BENCH_CACHE_DIR"
CUTLASS_ENV = "FP4BENCH_CUTLASS_DIR"
NVCC_ENV = "FP4BENCH_NVCC"
JOBS_ENV = "FP4BENCH_BUILD_JOBS"
MANIFEST = "manifest.json"
BUILD_LOG = "build.log"
HOST_TARGET = "host"
# Bump when the layout of a cache entry or the build recipe changes in a way the key cannot see.
RECIPE_VERSION = 1

NVCC_FLAGS = (
    "-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC",
    # CUTLASS's device code is heavy on templates; keep ptxas and cudafe quiet about what it cannot fix.
    "-diag-suppress=177,186,550",
)

# The SM120 block-scaled mainloop header and the fix CUTLASS 4.4 made to it.
SM120_MAINLOOP_HEADER = "cutlass/gemm/collective/sm120_blockscaled_mma_tma.hpp"
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

def patch_sm120_mainloop(text: str) -> str | None:
    """The header with alignas(16) on the scale arrays; None if it already has it.

    Raises BuildError for a header in neither the known unfixed nor the fixed form.
    """
    if len(_SF_DECL_FIXED.findall(text)) == 2:
        return None
    patched, count = _SF_DECL.subn(r"\1alignas(16) \2", text)
    if count != 2:
        raise BuildError(f"{SM120_MAINLOOP_HEADER} is in an unknown form: cannot apply the 16-byte alignment "
                         "fix of the shared-memory scale arrays (CUTLASS 4.4); use CUTLASS >= 4.4 headers "
                         f"through {CUTLASS_ENV}")
    return patched


def header_overlay(include: Path, root: Path | None = None) -> Path | None:
    """A directory to put before the CUTLASS include path, holding the patched SM120 mainloop header.

    None when the installed header already has the fix. Content-addressed, so concurrent writers agree.
    """
    original = include / SM120_MAINLOOP_HEADER
    if not original.is_file():
        return None
    patched = patch_sm120_mainloop(original.read_text())
    if patched is None:
        return None
    digest = hashlib.sha256(patched.encode()).hexdigest()[:16]
    overlay = (root or cache_root()) / f"cutlass-overlay-{digest}"
    target = overlay / SM120_MAINLOOP_HEADER
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(patched)
        tmp.replace(target)
    return overlay


# ------------------------------------------------------------------------------------------ keys, files

def _hash_tree(h, directory: Path) -> None:
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(directory)).encode())
            h.update(p.read_bytes())


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
        overlay = header_overlay(include) if include is not None else None
        return cls(find_nvcc(), find_ninja(), include, overlay)

    def versions(self) -> dict[str, str]:
        v = {"nvcc": nvcc_version(self.nvcc), "torch": torch_version()}
        if self.cutlass_include is not None:
            v["cutlass"] = cutlass_version(self.cutlass_include)
        return v

    def include_flags(self, spec: BuildSpec) -> list[str]:
        flags = [f"-I{kernel_source_dir() / spec.source_dir}"]
        # The overlay must precede the CUTLASS tree so that its patched header wins.
        if self.overlay is not None:
            flags.append(f"-I{self.overlay}")
        if self.cutlass_include is not None:
            flags.append(f"-I{self.cutlass_include}")
        return flags


def compile_flags(spec: BuildSpec, tools: Toolchain) -> list[str]:
    return [*NVCC_FLAGS, *spec.arch_flags(), *tools.include_flags(spec), *spec.extra_flags]


def build_key(spec: BuildSpec, tools: Toolchain) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({
        "recipe": RECIPE_VERSION, "name": spec.name, "target": spec.target, "product": spec.product,
        "units": [[u.name, u.source, list(map(list, u.defines))] for u in spec.units],
        "flags": compile_flags(spec, tools), "versions": tools.versions(),
    }, sort_keys=True).encode())
    _hash_tree(h, kernel_source_dir() / spec.source_dir)
    if tools.overlay is not None:
        _hash_tree(h, tools.overlay)
    return h.hexdigest()[:20]


def build_dir(spec: BuildSpec, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", spec.name)
    return cache_root() / f"{safe}-{spec.target}-{key}"


def _ninja_escape(s: str) -> str:
    return s.replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


def _shell_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'" if re.search(r"[^\w@%+=:,./-]", s) else s


def ninja_file(spec: BuildSpec, tools: Toolchain) -> str:
    """The build.ninja text: one nvcc object per unit, then a link step (or a host program)."""
    flags = " ".join(_shell_quote(f) for f in compile_flags(spec, tools))
    lines = [
        "ninja_required_version = 1.3",
        f"nvcc = {_shell_quote(tools.nvcc)}",
        f"flags = {flags}",
        "rule cu",
        "  command = $nvcc $flags $defines -x cu -MD -MF $out.d -c $in -o $out",
        "  depfile = $out.d",
        "  description = nvcc $name",
        "rule link_shared",
        "  command = $nvcc $flags -shared $in -o $out",
        "  description = link $out",
        "rule link_exe",
        "  command = $nvcc $flags $in -o $out",
        "  description = link $out",
    ]
    objects = []
    src_root = kernel_source_dir()
    for unit in spec.units:
        obj = f"obj/{unit.name}.o"
        objects.append(obj)
        defines = " ".join(_shell_quote(f"-D{k}={v}") for k, v in unit.defines)
        lines += [f"build {obj}: cu {_ninja_escape(str(src_root / unit.source))}",
                  f"  defines = {defines}", f"  name = {spec.name}:{unit.name}"]
    rule = "link_shared" if spec.product == "shared" else "link_exe"
    lines += [f"build {spec.product_name}: {rule} {' '.join(objects)}", f"default {spec.product_name}", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ build

@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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


def build(spec: BuildSpec, jobs: int | None = None, force: bool = False) -> Path:
    """Build `spec` (or find it in the cache) and return the path of its product."""
    tools = Toolchain.detect(spec)
    key = build_key(spec, tools)
    d = build_dir(spec, key)
    product = d / spec.product_name
    with _locked(d.with_name(d.name + ".lock")):
        if (d / MANIFEST).is_file() and product.is_file() and not force:
            return product
        if force and d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)
        (d / "build.ninja").write_text(ninja_file(spec, tools))
        start = time.monotonic()
        proc = subprocess.run([tools.ninja, "-C", str(d), "-j", str(jobs or default_jobs())],
                              capture_output=True, text=True, check=False)
        log = proc.stdout + proc.stderr
        (d / BUILD_LOG).write_text(log)
        if proc.returncode != 0:
            raise BuildError(f"building {spec.name} for {spec.target} failed (log: {d / BUILD_LOG}):\n{log.rstrip()}")
        (d / MANIFEST).write_text(json.dumps({
            "name": spec.name, "target": spec.target, "key": key, "product": spec.product_name,
            "units": [u.name for u in spec.units], "versions": tools.versions(),
            "overlay": str(tools.overlay) if tools.overlay else None,
            "seconds": round(time.monotonic() - start, 1), "built_at": time.time(),
        }, indent=1))
    return product


def build_many(specs: list[BuildSpec], jobs: int | None = None, force: bool = False,
               on_done=None) -> tuple[dict[BuildSpec, Path], dict[BuildSpec, BuildError]]:
    """Build several specs, `jobs` compilers at a time; returns (products, failures), never raises BuildError.

    Several specs: one compiler each, `jobs` specs at once; a single spec gets all the jobs for its units.
    `on_done(spec)` is called as each finishes (a progress bar).
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    jobs = jobs or default_jobs()
    per_build = 1 if len(specs) > 1 else jobs
    built: dict[BuildSpec, Path] = {}
    failures: dict[BuildSpec, BuildError] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(specs)))) as pool:
        futures = {pool.submit(build, s, per_build, force): s for s in specs}
        for fut in as_completed(futures):
            spec = futures[fut]
            try:
                built[spec] = fut.result()
            except BuildError as e:
                failures[spec] = e
            if on_done is not None:
                on_done(spec)
    return built, failures


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
