"""The results document of `fp4bench run` and `verify`: a versioned JSON schema, an environment fingerprint,
atomic writes.

Document (schema `SCHEMA`, version `SCHEMA_VERSION` = 2):
    {"schema": "fp4bench-results", "schema_version": 2,
     "environment": {created, host, platform, command, argv, gpus: [device facts], software: {fp4bench,
                     fp4bench_commit, python, torch, torch_cuda, triton, cutlass, cuda_python},
                     clocks: {start, end}},
     "settings": {problem (the kind; absent before problem kinds: "gemm"), shapes, groups, formats, kernels,
                  baseline, device, gpus, isolation, timing (or null for verify), check_seeds, ceilings, shard,
                  sanitize (verify --sanitize: the tools, else null)},
     "cases": [case, ...]}
A case is `fp4bench.case.CaseRecord.to_dict()`:
    kernel, role, problem ("gemm", "gemv", "dual_gemm" or "group_gemm"), format, shape {m, n, k, l, seed}
    (a group_gemm case: m, n and k are lists with one entry per group; version 2 as before, since a reader of
    GEMM cases sees nothing new), gpu (physical index or null),
    status ("pass" | "fail" | "error" | "skip"), reason, check (CheckResult fields of the worst input),
    findings [str], config (the launch configuration, with "source": "tuned" | "heuristic"; null for kernels
    without launch choices), tuning (candidates' {config, median_us, rse} when tuning ran, else null),
    timing (Measurement.to_dict: stats in seconds, mode, clock, timer, stop_reason, converged, ...; only for
    passed, timed cases), sol (SolEstimate.to_dict), metrics {tflops, gbps, pct_sol}, notes [str], seconds,
    sanitizer (verify --sanitize: per tool {tool, errors, findings [{tool, kind, kernel, address, where, fatal,
    nearest, out_of_bounds}], log, seconds, call_seconds, exit_code, error}; absent otherwise).
Version 1 (before problem kinds and recorded configurations) is read too: its cases gain problem "gemm" and
no config (`upgrade_v1`). Documents are always written as the current version.

Every write goes to a temporary file in the same folder and is renamed over the target, so a reader (or a
crash) never sees half a document; files are created readable by everyone (0644), as CI artifact steps
running as another user need. `ResultsWriter.add(case)` rewrites the whole document after each case.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from .case import CaseRecord

SCHEMA = "fp4bench-results"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
FILE_MODE = 0o644


class ResultsFileError(ValueError):
    pass


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write text or bytes to `path` through a temporary file renamed over it: a reader never sees half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; results, summaries and images are shared artifacts.
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"atomic_write_text writes str, not {type(text).__name__}")
    atomic_write(path, text)


def json_safe(obj):
    """NaN and infinity are not JSON: they become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(doc: dict) -> str:
    return json.dumps(json_safe(doc), indent=1, allow_nan=False) + "\n"


def write_results(path: str | Path, doc: dict) -> None:
    atomic_write_text(path, dumps(doc))


def make_document(environment: dict, settings: dict, cases: list[CaseRecord]) -> dict:
    """A document ready to write: the cases in their JSON form."""
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "environment": environment,
            "settings": settings, "cases": [c.to_dict() for c in cases]}


def upgrade_v1(case: dict) -> dict:
    """A version-1 case in the version-2 form: the GEMM problem kind, no recorded configuration."""
    return {"problem": "gemm", "config": None, "tuning": None, **case}


def load_results(path: str | Path) -> dict:
    """A results document with its cases as `CaseRecord`s, checked for its schema (version 1 is upgraded);
    any problem is one-line `ResultsFileError`."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise ResultsFileError(f"cannot read results file {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ResultsFileError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ResultsFileError(f"{path}: not an fp4bench results file")
    version = doc.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise ResultsFileError(f"{path}: schema version {version!r}; this fp4bench reads versions "
                               f"{', '.join(map(str, READABLE_VERSIONS))}")
    if not isinstance(doc.get("cases"), list):
        raise ResultsFileError(f"{path}: 'cases' must be a list")
    records = []
    for i, case in enumerate(doc["cases"]):
        try:
            records.append(CaseRecord.from_dict(upgrade_v1(case) if version == 1 else case))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ResultsFileError(f"{path}: case {i} is malformed ({type(e).__name__}: {e})") from None
    doc["cases"] = records
    doc["schema_version"] = SCHEMA_VERSION
    doc.setdefault("settings", {})
    doc.setdefault("environment", {})
    return doc


class ResultsWriter:
    """Holds the document of a run and rewrites it atomically after every added case."""

    def __init__(self, path: str | Path, environment: dict | None = None, settings: dict | None = None):
        self.path = Path(path)
        self.environment = environment or {}
        self.settings = settings or {}
        self.cases: list[CaseRecord] = []

    def document(self) -> dict:
        return make_document(self.environment, self.settings, self.cases)

    def add(self, case: CaseRecord) -> None:
        self.cases.append(case)
        self.flush()

    def flush(self) -> None:
        write_results(self.path, self.document())


# ---------------------------------------------------------------------------------------------
# environment fingerprint
# ---------------------------------------------------------------------------------------------
def _is_fp4bench_checkout(directory: Path) -> bool:
    return (directory / "pyproject.toml").is_file() and (directory / "fp4bench" / "__init__.py").is_file()


def git_commit(repo_dir: Path | None = None) -> str | None:
    """The commit of the fp4bench checkout (with '-dirty' when it has local changes); None outside git.

    Looked for beside the package (an editable install) and, for a regular install run inside a clone of
    fp4bench, in the working directory. A copy of the tree without .git (a CI artifact, a remote GPU
    machine) names its commit in FP4BENCH_GIT_COMMIT.
    """
    if os.environ.get("FP4BENCH_GIT_COMMIT"):
        return os.environ["FP4BENCH_GIT_COMMIT"]
    candidates = [repo_dir] if repo_dir else [Path(__file__).resolve().parent.parent, Path.cwd()]
    for cwd in candidates:
        try:
            top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True,
                                 timeout=10)
            if top.returncode != 0 or not (repo_dir or _is_fp4bench_checkout(Path(top.stdout.strip()))):
                continue
            head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                   capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if head.returncode == 0:
            return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    return None


def _module_version(name: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:   # pragma: no cover - Python < 3.8
        return None
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def software_versions() -> dict:
    import torch

    from . import __version__

    triton = None
    try:
        import triton as _triton

        triton = _triton.__version__
    except ImportError:
        pass
    return {"fp4bench": __version__, "fp4bench_commit": git_commit(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda, "triton": triton,
            "cutlass": _module_version("nvidia-cutlass"), "cuda_python": _module_version("cuda-python")
            or _module_version("cuda-bindings")}


def environment_fingerprint(gpus: list[dict] | None, clocks_start: dict | None = None,
                            argv: list[str] | None = None) -> dict:
    """Everything that changes a number: hardware, software versions, the command line, clocks."""
    argv = list(sys.argv if argv is None else argv)
    return {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "platform": platform.platform(),
            "command": shlex.join(argv), "argv": argv,
            "gpus": gpus or [], "software": software_versions(),
            "clocks": {"start": clocks_start or {}, "end": {}}}
