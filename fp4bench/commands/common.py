"""Options and argument parsing shared by the subcommands; every bad input becomes an `InputError`."""

from __future__ import annotations

import os

import click

from ..arch import Target, current_target
from ..errors import InputError
from ..formats import GEMM_FORMATS, GemmFormat, gemm_format
from ..kernels import Kernel, UnknownKernel, select_kernels
from ..kernels.external import KernelLoadError
from ..problem import GEMM, Shape, validate_shape
from ..shapes import ShapeFileError, load_shapes

ALL = "all"


def device_option(default: str = "auto"):
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=default, show_default=True,
                        help="Where to run: cuda, cpu, or auto (cuda when present).")


def parse_formats(values) -> list[GemmFormat]:
    names: list[str] = []
    for v in values:
        names.extend(x.strip() for x in v.split(",") if x.strip())
    if ALL in names:
        return list(GEMM_FORMATS.values())
    out = []
    for name in names:
        try:
            out.append(gemm_format(name))
        except KeyError as e:
            raise InputError(e.args[0]) from None
    return out


def parse_shapes(path: str, groups=None, kind: str = GEMM) -> list[Shape]:
    try:
        return load_shapes(path, groups, kind)
    except ShapeFileError as e:
        raise InputError(str(e)) from None


def check_shapes_legal(shapes: list[Shape], formats: list[GemmFormat], path: str, kind: str = GEMM) -> None:
    """Every shape must be legal for every format asked for (K a multiple of the block, ...)."""
    for fmt in formats:
        for shape in shapes:
            reason = validate_shape(shape, fmt, kind)
            if reason:
                raise InputError(f"{path}: shape {shape}: {reason}")


def available_memory(target: Target) -> int | None:
    """Free bytes where the cases will run: free GPU memory, or available host RAM; None if unknown."""
    if target.device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(target.index)[0])
    # MemAvailable counts reclaimable page cache; free pages alone would refuse shapes that fit.
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None


def check_shapes_fit(shapes: list[Shape], formats: list[GemmFormat], target: Target,
                     free_bytes: int | None = None, kind: str = GEMM) -> None:
    """Refuse a shape whose check cannot fit in the device's free memory, saying how much it needs."""
    from ..pipeline import case_bytes

    free = available_memory(target) if free_bytes is None else free_bytes
    if free is None:
        return
    for fmt in formats:
        for shape in shapes:
            need = case_bytes(shape, fmt, kind)
            if need > free:
                where = "host RAM available" if target.device == "cpu" else f"free on {target.describe()}"
                raise InputError(f"shape {shape} ({fmt.name}) needs about {need / 2**30:.1f} GiB; "
                                 f"only {free / 2**30:.1f} GiB {where}")


def parse_kernels(patterns, role: str | None = None, problem: str = GEMM) -> list[Kernel]:
    names: list[str] = []
    for p in patterns:
        names.extend(x.strip() for x in p.split(",") if x.strip())
    for name in names:
        # A path that is not a .py file would otherwise read as an unknown kernel name.
        if not name.endswith(".py") and ("/" in name or os.path.isfile(name)):
            raise InputError(f"kernel file {name} is not a Python file (a submission is a .py file "
                             f"defining custom_kernel(data))")
    try:
        return select_kernels(names, role, problem)
    except (UnknownKernel, KernelLoadError) as e:
        raise InputError(e.args[0]) from None


def resolve_target(device: str, gpu: int = 0) -> Target:
    if gpu < 0:
        raise InputError(f"GPU id must be 0 or more, got {gpu}")
    try:
        return current_target(device, gpu)
    except (RuntimeError, ValueError) as e:
        raise InputError(str(e)) from None
