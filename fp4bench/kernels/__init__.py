"""Kernel registry: every kernel and baseline by name, and loading competition-style submission files.

Kernel modules are listed in `KERNEL_MODULES`; each exposes `KERNELS`, a sequence of `Kernel` instances.
A module whose optional dependency is missing (Triton on a machine without it, say) is skipped and
its import error kept for `fp4bench list`.
"""

from __future__ import annotations

import fnmatch
import importlib
from functools import lru_cache

from ..problem import GEMM
from .base import Kernel, RunFn

KERNEL_MODULES = (
    "fp4bench.kernels.torch_ref",
    "fp4bench.kernels.external",
    "fp4bench.kernels.sm90",
    "fp4bench.kernels.sm90_wgmma",
    "fp4bench.kernels.sm120_triton",
    "fp4bench.kernels.triton_portable",
    "fp4bench.kernels.baselines",
    "fp4bench.kernels.triton_dot_scaled",
    "fp4bench.kernels.cutlass_blackwell",
    "fp4bench.kernels.peers",
)


class UnknownKernel(KeyError):
    pass


@lru_cache(maxsize=None)
def _load() -> tuple[dict[str, Kernel], dict[str, str]]:
    kernels: dict[str, Kernel] = {}
    errors: dict[str, str] = {}
    for mod_name in KERNEL_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            errors[mod_name] = f"{type(e).__name__}: {e}"
            continue
        for k in getattr(mod, "KERNELS", ()):
            if k.name in kernels:
                raise RuntimeError(f"kernel name {k.name!r} registered twice")
            kernels[k.name] = k
    return kernels, errors


def all_kernels() -> dict[str, Kernel]:
    return dict(_load()[0])


def import_errors() -> dict[str, str]:
    return dict(_load()[1])


def get_kernel(name_or_path: str, problem: str = GEMM) -> Kernel:
    """A registered kernel by name, or a competition-style submission file by path (ends in .py) loaded for
    `problem` (the kind whose `task` module it imports)."""
    if name_or_path.endswith(".py"):
        from .external import ExternalKernel

        return ExternalKernel.from_path(name_or_path, problem)
    kernels = all_kernels()
    if name_or_path in kernels:
        return kernels[name_or_path]
    raise UnknownKernel(f"unknown kernel {name_or_path!r}; known: {', '.join(sorted(kernels))}")


def select_kernels(patterns: list[str] | tuple[str, ...], role: str | None = None,
                   problem: str = GEMM) -> list[Kernel]:
    """Kernels matching any of the glob patterns (or paths); every pattern must match something."""
    kernels = all_kernels()
    chosen: dict[str, Kernel] = {}
    for pat in patterns:
        if pat.endswith(".py") or pat in kernels:
            k = get_kernel(pat, problem)
            chosen[k.name] = k
            continue
        hits = [k for n, k in sorted(kernels.items()) if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise UnknownKernel(f"unknown kernel {pat!r}; known: {', '.join(sorted(kernels))}")
        for k in hits:
            chosen[k.name] = k
    out = list(chosen.values())
    if role is not None:
        out = [k for k in out if k.role == role]
    return out


__all__ = ["Kernel", "RunFn", "UnknownKernel", "all_kernels", "get_kernel", "import_errors", "select_kernels"]
