"""Competition-style submission files: a Python file exposing `custom_kernel(data) -> output`.

`fp4bench verify --kernel path/to/submission.py [--problem P]` loads it as a kernel named after the file; it
may compute any problem kind, the one `--problem` names. While it loads, the submission's folder is first on
`sys.path` (its sibling task.py, utils.py...) and, unless a task.py sits beside it, `import task` gives the
problem's interface module (fp4bench.competition_task): a submission runs as downloaded.

While it loads, the names its folder's modules import are recorded (`imports`): `--strict-submission`
(fp4bench.strict) refuses a submission that imports the reference. A submission gets no per-input-set
preparation step (`Kernel.prepare_inputs` stays the identity): everything `custom_kernel` does is timed.

Loading errors are of two kinds:
  * the file is bad input (missing or unreadable, not Python, a syntax error, an import that fails in its own
    code, no `custom_kernel`): `KernelLoadError`, one line, exit code 2;
  * the import fails because of this machine (`environment_reason`: a package it needs is not installed, no
    CUDA toolchain, no GPU, not the GPU architecture it targets): the kernel still loads, with
    `import_failure` set, and every case of it is skipped with that reason (`unavailable_reason`); the
    run's exit code is then 4 unless a case failed (fp4bench.errors).
"""

from __future__ import annotations

import builtins
import contextlib
import importlib.util
import re
import sys
from pathlib import Path

from ..arch import Target
from ..competition_task import task_module
from ..formats import GEMM_FORMATS
from ..problem import GEMM, PROBLEM_KINDS, Problem, kind_spec
from .base import Kernel, RunFn

# Messages of errors that say the machine, not the submission, is missing something (matched case-blind).
ENVIRONMENT_MESSAGES = re.compile(
    r"CUDA_HOME|nvcc|ninja|no CUDA GPUs|NVIDIA driver|Torch not compiled with CUDA|CUDA driver|"
    r"cuda.*(not available|unavailable)|no kernel image|compute capability|sm_?1[0-2]\da?\b|"
    r"unsupported (gpu|arch)|requires? .*(blackwell|hopper|sm_?\d+)|libcuda|libnvrtc|cudart",
    re.IGNORECASE)
# Modules a competition submission imports from its own folder: missing, they are a broken upload.
SUBMISSION_SIBLINGS = {"task", "utils", "reference", "submission"}


class KernelLoadError(ValueError):
    pass


def environment_reason(exc: BaseException) -> str | None:
    """Why an import failure is this machine's lack rather than the submission's fault, or None."""
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] not in SUBMISSION_SIBLINGS:
        return f"needs the Python package {exc.name.split('.')[0]!r}, which is not installed here"
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if isinstance(exc, (ImportError, OSError, RuntimeError, AssertionError)) or "Error" in type(exc).__name__:
        if ENVIRONMENT_MESSAGES.search(str(exc)):
            return f"its import needs what this machine lacks: {text}"
    return None


@contextlib.contextmanager
def recording_imports(folder: Path, names: list[str]):
    """Every module name that code in `folder` (or below it) imports while the block runs, into `names`
    (`from x import y` records x and x.y)."""
    original = builtins.__import__

    def recording(name, globals=None, locals=None, fromlist=(), level=0):
        importer = (globals or {}).get("__file__")
        if importer and level == 0 and folder in Path(importer).resolve().parents:
            names.append(name)
            names.extend(f"{name}.{item}" for item in fromlist or () if item != "*")
        return original(name, globals, locals, fromlist, level)

    builtins.__import__ = recording
    try:
        yield names
    finally:
        builtins.__import__ = original


class ExternalKernel(Kernel):
    formats = tuple(GEMM_FORMATS)
    problems = PROBLEM_KINDS
    description = "competition-style custom_kernel(data) from a file"
    submission = True

    def __init__(self, name: str, fn, path: Path, import_failure: str | None = None, imports: tuple = ()):
        self.name = name
        self._fn = fn
        self.path = path
        self.import_failure = import_failure
        self.imports = imports   # module names the submission's folder imported while it loaded

    @classmethod
    def from_path(cls, path: str, problem: str = GEMM) -> "ExternalKernel":
        p = Path(path)
        if not p.is_file():
            raise KernelLoadError(f"kernel file {path} does not exist")
        if p.suffix != ".py":
            raise KernelLoadError(f"kernel file {path} is not a Python file")
        mod_name = f"fp4bench_submission_{abs(hash(str(p.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_name, p)
        module = importlib.util.module_from_spec(spec)
        # Submissions import their siblings (task.py, utils.py) as the competition's runner allows, and
        # `from task import input_t, output_t` works without a sibling task.py: the problem's own comes then.
        # Another submission's `task` must not linger in sys.modules either way.
        saved_task = sys.modules.pop("task", None)
        if not (p.parent / "task.py").is_file():
            sys.modules["task"] = task_module(kind_spec(problem).competition)
        sys.path.insert(0, str(p.parent.resolve()))
        imported: list[str] = []
        try:
            with recording_imports(p.parent.resolve(), imported):
                spec.loader.exec_module(module)
        except SyntaxError as e:
            raise KernelLoadError(f"kernel file {path} is not valid Python: {e.msg} (line {e.lineno})") from None
        except Exception as e:  # a submission can fail to import in any way
            reason = environment_reason(e)
            if reason:
                return cls(p.stem, None, p, import_failure=reason)
            raise KernelLoadError(f"kernel file {path} failed to import: {type(e).__name__}: {e}") from None
        finally:
            sys.path.pop(0)
            sys.modules.pop("task", None)
            if saved_task is not None:
                sys.modules["task"] = saved_task
        fn = getattr(module, "custom_kernel", None)
        if not callable(fn):
            raise KernelLoadError(f"kernel file {path} defines no custom_kernel(data) function")
        return cls(p.stem, fn, p, imports=tuple(dict.fromkeys(imported)))

    @property
    def folder(self) -> Path:
        """The submission's folder (its sibling modules and a competition reference.py live there)."""
        return self.path.parent.resolve()

    @property
    def namespace(self) -> dict:
        """The globals of the submission's module: what its functions can reach."""
        return getattr(self._fn, "__globals__", {})

    def unavailable_reason(self, target: Target) -> str | None:
        if self.import_failure:
            return f"cannot be imported on this machine: {self.import_failure}"
        return super().unavailable_reason(target)

    def prepare(self, problem: Problem) -> RunFn:
        return self._fn

    def prepare_inputs(self, problem: Problem, data):
        """No preparation outside the timed region for a submission, whatever its file defines."""
        return data


KERNELS = ()
