"""`--strict-submission`: what a competition submission may not use in its timed path, found by tracing a call.

A submission is meant to be a kernel, not a call of the harness's reference or of the vendor's GEMM. The
check is on by default for submission files (`fp4bench run` / `verify --kernel file.py`;
`--no-strict-submission` turns it off) and never applies to registered kernels (the baselines are the vendor
path by design). Its findings fail the case, named:
  reference-call  the submission's folder imports a reference module (`REFERENCE_MODULES`: fp4bench's
                  reference, the registered torch reference, or a `reference` module of its own, the
                  competition's), recorded while it loads and read from what its functions' globals hold; or
                  the traced call runs a function defined in one (sys.setprofile, every thread).
  vendor-gemm     the traced call makes torch._scaled_mm (cuBLAS's block-scaled GEMM) or a grouped matmul,
                  or dense torch matmuls (mm, bmm, addmm, matmul and @, linear, einsum, tensordot,
                  convolution... also through torch.ops.aten) whose work adds up to VENDOR_WORK_SHARE of the
                  problem's FLOPs: dequantize + torch.mm on the full operands, however it is chunked. A
                  TorchFunctionMode sees every torch call Python code makes (a TorchDispatchMode would see
                  the aten ops below them too, but entering one imports torch._dynamo: seconds per process).
The traced call is the first checked call (untimed). Out of reach: compiled code that calls a vendor library
without Python (a submission's own C++ extension calling cuBLAS, a torch.compile'd graph), and a submission
that detects the tracer and behaves differently while traced.
"""

from __future__ import annotations

import inspect
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from .integrity import Finding

REFERENCE_CALL = "reference-call"
VENDOR_GEMM = "vendor-gemm"
VENDOR_WORK_SHARE = 0.5
REFERENCE_MODULES = ("fp4bench.reference", "fp4bench.kernels.torch_ref")
# A module of this name beside a submission is the competition's reference (reference.py).
COMPETITION_REFERENCE = "reference"
# Vendor GEMM entry points: any call is a finding.
VENDOR_OPS = frozenset({"_scaled_mm", "_scaled_mm_v2", "_scaled_grouped_mm", "_grouped_mm"})
# Dense matmul-family calls -> the index of the argument whose last dimension is the reduction.
MATMUL_OPS = {"mm": 0, "bmm": 0, "matmul": 0, "linalg_matmul": 0, "mv": 0, "dot": 0, "vdot": 0, "inner": 0,
              "linear": 0, "addmm": 1, "addbmm": 1, "baddbmm": 1, "addmv": 1, "_int_mm": 0, "chain_matmul": 0,
              "linalg_multi_dot": 0, "multi_dot": 0}
CONVOLUTION_OPS = frozenset({"convolution", "_convolution", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                             "conv_transpose2d", "conv_transpose3d", "cudnn_convolution", "mkldnn_convolution"})


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (list, tuple)):
        return next((t for t in map(_first_tensor, x) if t is not None), None)
    return None


def _einsum_work(args) -> int:
    """2 x the product of every index's size (the multiply-adds of an einsum done as one contraction)."""
    equation = args[0]
    operands = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
    sizes = {}
    for term, t in zip(equation.replace(" ", "").split("->")[0].split(","), operands):
        for letter, size in zip(term.replace("...", ""), t.shape[-len(term.replace("...", "")):]):
            sizes[letter] = size
    return 2 * prod(sizes.values())


def op_work(name: str, args, out) -> int:
    """FLOPs of a matmul-family call from its arguments and result (0 for any other call)."""
    result = _first_tensor(out)
    if name == "einsum":
        return _einsum_work(args)
    if result is None:
        return 0
    if name in MATMUL_OPS:
        operand = _first_tensor(args[MATMUL_OPS[name]]) if len(args) > MATMUL_OPS[name] else None
        if isinstance(operand, torch.Tensor) and operand.dim():
            return 2 * max(result.numel(), 1) * operand.shape[-1]
        return 0
    if name == "tensordot" and len(args) > 1 and all(isinstance(t, torch.Tensor) for t in args[:2]):
        # No batch dimensions: |A| |B| / |C| is the contracted size squared.
        contracted = (args[0].numel() * args[1].numel() / max(result.numel(), 1)) ** 0.5
        return int(2 * result.numel() * contracted)
    if name in CONVOLUTION_OPS and len(args) > 1 and isinstance(args[1], torch.Tensor) and args[1].dim():
        weight = args[1]
        return 2 * result.numel() * (weight.numel() // max(weight.shape[0], 1))
    return 0


@dataclass
class Trace:
    """What one traced call did: reference functions it ran, vendor GEMM calls, dense matmul work."""

    reference_calls: list[str] = field(default_factory=list)
    vendor_calls: list[str] = field(default_factory=list)
    matmul_work: int = 0
    matmul_ops: dict[str, int] = field(default_factory=dict)


class _OpRecorder(TorchFunctionMode):
    def __init__(self, trace: Trace):
        super().__init__()
        self.trace = trace

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "").split(".")[0]   # torch.ops.aten.mm.default -> mm
        if name in VENDOR_OPS:
            self.trace.vendor_calls.append(f"torch.{name}")
        out = func(*args, **(kwargs or {}))
        work = op_work(name, args, out)
        if work:
            self.trace.matmul_work += work
            self.trace.matmul_ops[name] = self.trace.matmul_ops.get(name, 0) + 1
        return out


def reference_files(folder: Path | None) -> dict[str, str]:
    """Source files whose functions a submission may not run, with their module names: the reference
    modules, and a reference.py beside the submission."""
    import importlib

    files = {str(Path(importlib.import_module(m).__file__).resolve()): m for m in REFERENCE_MODULES}
    if folder is not None:
        files[str((folder / f"{COMPETITION_REFERENCE}.py").resolve())] = COMPETITION_REFERENCE
    return files


@contextmanager
def _profiling(trace: Trace, files: dict[str, str]):
    """Record the first call into each function defined in `files`, on every thread, while the block runs."""
    seen: set[str] = set()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename in files:
            where = f"{files[frame.f_code.co_filename]}.{frame.f_code.co_name}"
            if where not in seen:
                seen.add(where)
                trace.reference_calls.append(where)

    previous, previous_threads = sys.getprofile(), threading.getprofile()
    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(previous)
        threading.setprofile(previous_threads)


def traced(fn, folder: Path | None = None):
    """(a callable running `fn` under both recorders, the Trace it fills)."""
    trace = Trace()
    files = reference_files(folder)

    def call(data):
        with _profiling(trace, files), _OpRecorder(trace):
            return fn(data)

    return call, trace


def trace_findings(trace: Trace, problem_flops: int) -> list[Finding]:
    findings = []
    if trace.reference_calls:
        findings.append(Finding(REFERENCE_CALL, f"the timed path calls the reference "
                                                f"({', '.join(trace.reference_calls[:3])})"))
    if trace.vendor_calls:
        findings.append(Finding(VENDOR_GEMM, f"the timed path calls {', '.join(dict.fromkeys(trace.vendor_calls))} "
                                             f"(the vendor's GEMM, not a kernel)"))
    elif problem_flops and trace.matmul_work >= VENDOR_WORK_SHARE * problem_flops:
        ops = ", ".join(f"torch.{n} x{c}" for n, c in trace.matmul_ops.items())
        findings.append(Finding(VENDOR_GEMM, f"dense torch matmuls ({ops}) do {trace.matmul_work / problem_flops:.0%} "
                                             f"of the problem's FLOPs (the vendor's GEMM, not a kernel)"))
    return findings


def _module_of(value) -> str | None:
    if inspect.ismodule(value):
        return value.__name__
    if inspect.isfunction(value) or inspect.isclass(value):
        return value.__module__
    return None


def _in_folder(module_name: str, folder: Path) -> bool:
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    return bool(path) and folder in Path(path).resolve().parents


def used_modules(namespace: dict, folder: Path) -> set[str]:
    """Names of the modules whose objects a submission's globals hold, following modules of its own folder
    (its helpers, imported once and cached: their imports are not recorded again by a later load)."""
    found: set[str] = set()
    pending = [namespace]
    visited: set[str] = set()
    while pending:
        for value in list(pending.pop().values()):
            name = _module_of(value)
            if name is None:
                continue
            found.add(name)
            if name not in visited and _in_folder(name, folder):
                visited.add(name)
                pending.append(vars(sys.modules[name]))
    return found


def import_findings(imports, namespace: dict | None, folder: Path) -> list[Finding]:
    """A reference-call finding when the submission's folder imports a reference module (recorded at load,
    or held by its functions' globals)."""
    names = set(imports) | (used_modules(namespace, folder) if namespace is not None else set())
    hits = sorted(n for n in names if n in REFERENCE_MODULES or
                  (n.split(".")[-1] == COMPETITION_REFERENCE and not n.startswith("fp4bench")))
    if not hits:
        return []
    return [Finding(REFERENCE_CALL, f"the submission imports the reference ({', '.join(hits)})")]
