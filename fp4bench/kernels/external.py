"""Competition-style submission files: a Python file exposing `custom_kernel(data) -> c`.

`fp4bench verify --kernel path/to/submission.py` loads it as a kernel named after the file. Loading errors
(missing or unreadable file, a syntax error, no `custom_kernel`) raise `KernelLoadError` with one line.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ..formats import GEMM_FORMATS
from ..problem import Problem
from .base import Kernel, RunFn


BUNDLED_TASK_DIR = Path(__file__).resolve().parent.parent / "competition_task"


class KernelLoadError(ValueError):
    pass


class ExternalKernel(Kernel):
    formats = tuple(GEMM_FORMATS)
    description = "competition-style custom_kernel(data) from a file"

    def __init__(self, name: str, fn, path: Path):
        self.name = name
        self._fn = fn
        self.path = path

    @classmethod
    def from_path(cls, path: str) -> "ExternalKernel":
        p = Path(path)
        if not p.is_file():
            raise KernelLoadError(f"kernel file {path} does not exist")
        if p.suffix != ".py":
            raise KernelLoadError(f"kernel file {path} is not a Python file")
        mod_name = f"fp4bench_submission_{abs(hash(str(p.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_name, p)
        module = importlib.util.module_from_spec(spec)
        # Submissions import their siblings (task.py, utils.py) as the competition's runner allows, and
        # `from task import input_t, output_t` works without a sibling task.py: the bundled one comes last.
        sys.path.insert(0, str(p.parent.resolve()))
        sys.path.append(str(BUNDLED_TASK_DIR))
        try:
            spec.loader.exec_module(module)
        except SyntaxError as e:
            raise KernelLoadError(f"kernel file {path} is not valid Python: {e.msg} (line {e.lineno})") from None
        except Exception as e:  # a submission can fail to import in any way
            raise KernelLoadError(f"kernel file {path} failed to import: {type(e).__name__}: {e}") from None
        finally:
            sys.path.pop(0)
            sys.path.remove(str(BUNDLED_TASK_DIR))
        fn = getattr(module, "custom_kernel", None)
        if not callable(fn):
            raise KernelLoadError(f"kernel file {path} defines no custom_kernel(data) function")
        return cls(p.stem, fn, p)

    def prepare(self, problem: Problem) -> RunFn:
        return self._fn


KERNELS = ()
