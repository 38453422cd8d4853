"""The results document of `fp4bench run`: a versioned JSON schema, an environment fingerprint, atomic writes.

Document (schema `SCHEMA_VERSION`):
    {"schema": "fp4bench-results", "schema_version": 1,
     "environment": {...fingerprint...},
     "settings": {...timing and selection options...},
     "cases": [case, ...]}
A case is the dict `runner.run_case` returns: kernel, role, format, shape {m, n, k, l, seed}, status
(pass/fail/error/skip), reason, check (CheckResult fields), timing (Measurement.to_dict, absent unless the
case passed), sol (SolEstimate.to_dict), metrics (tflops, gbps, pct_sol), gpu (index or null).

Every write goes to a temporary file in the same folder and is renamed over the target, so a reader (or a
crash) never sees half a document. `ResultsWriter.add(case)` rewrites the whole document after each case.
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

SCHEMA = "fp4bench-results"
SCHEMA_VERSION = 1


class ResultsFileError(ValueError):
    pass


def atomic_write_text(path: str | Path, text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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


def make_document(environment: dict, settings: dict, cases: list[dict]) -> dict:
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "environment": environment,
            "settings": settings, "cases": list(cases)}


def load_results(path: str | Path) -> dict:
    """A results document, checked for its schema; any problem is one-line `ResultsFileError`."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise ResultsFileError(f"cannot read results file {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ResultsFileError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ResultsFileError(f"{path}: not an fp4bench results file")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ResultsFileError(f"{path}: schema version {doc.get('schema_version')!r}; "
                               f"this fp4bench reads version {SCHEMA_VERSION}")
    if not isinstance(doc.get("cases"), list):
        raise ResultsFileError(f"{path}: 'cases' must be a list")
    return doc


class ResultsWriter:
    """Holds the document of a run and rewrites it atomically after every added case."""

    def __init__(self, path: str | Path, environment: dict | None = None, settings: dict | None = None):
        self.path = Path(path)
        self.environment = environment or {}
        self.settings = settings or {}
        self.cases: list[dict] = []

    def document(self) -> dict:
        return make_document(self.environment, self.settings, self.cases)

    def add(self, case: dict) -> None:
        self.cases.append(case)
        self.flush()

    def flush(self) -> None:
        write_results(self.path, self.document())


# ---------------------------------------------------------------------------------------------
# environment fingerprint
# ---------------------------------------------------------------------------------------------
def git_commit(repo_dir: Path | None = None) -> str | None:
    """The commit of the fp4bench checkout (with '-dirty' when it has local changes); None outside git.

    A copy of the tree without .git (a CI artifact, a remote GPU machine) names its commit in FP4BENCH_GIT_COMMIT.
    """
    if os.environ.get("FP4BENCH_GIT_COMMIT"):
        return os.environ["FP4BENCH_GIT_COMMIT"]
    cwd = repo_dir or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


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
