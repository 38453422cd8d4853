"""`fp4bench device`: what the GPUs are (through cuda-python) and, with --measure, their measured ceilings.

Without a GPU or driver it prints one line and exits 2 (`verify --device cpu` and `run --device cpu` still
work there). `--measure` measures every selected GPU now and rewrites its cache entry.
"""

from __future__ import annotations

import json

import click
from tabulate import tabulate

from ..device import (
    NoDeviceError,
    ceilings_path,
    current_clocks,
    load_ceilings,
    measure_ceilings,
    query_devices,
)
from ..errors import InputError
from ..results import json_safe
from ..sol import Ceilings


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def _mhz(v) -> str:
    return "-" if v is None else f"{v:.0f} MHz"


def _ceiling_lines(c: Ceilings | None) -> list[tuple[str, str]]:
    if c is None:
        return [("ceilings", "not measured (fp4bench device --measure)")]
    rows = [("copy bandwidth", f"{c.copy_bytes_per_s / 1e12:.2f} TB/s (read + written)")]
    for path, rate in sorted(c.matrix_flops_per_s.items()):
        rows.append((f"{path} GEMM", f"{rate / 1e12:.0f} TFLOP/s"))
    rows.append(("measured", c.measured_at))
    return rows


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--measure", is_flag=True, help="Measure copy bandwidth and bf16/fp8 GEMM rates now and cache them.")
@click.option("--gpu", "gpus", type=int, multiple=True, help="Only this GPU (repeatable; default: all).")
def device(as_json, measure, gpus):
    """Show the GPUs: name, compute capability, SMs, memory, L2, clocks, driver and CUDA versions."""
    try:
        devices = query_devices()
    except NoDeviceError as e:
        raise InputError(str(e)) from None
    if gpus:
        bad = [g for g in gpus if not 0 <= g < len(devices)]
        if bad:
            raise InputError(f"no GPU {', '.join(map(str, bad))}; this machine has {len(devices)}")
        devices = [d for d in devices if d.index in gpus]

    out = []
    for d in devices:
        if measure:
            from ..device import save_ceilings

            click.echo(f"measuring GPU {d.index} ({d.name}) ...", err=True)
            ceilings = measure_ceilings(d.index)
            save_ceilings(d.uuid, ceilings)
        else:
            ceilings = load_ceilings(d.uuid)
        out.append((d, ceilings, current_clocks(d.index)))

    if as_json:
        doc = [{**d.to_dict(), "clocks_now": clocks, "ceilings": None if c is None else c.to_dict(),
                "ceilings_file": str(ceilings_path(d.uuid))} for d, c, clocks in out]
        click.echo(json.dumps(json_safe(doc), indent=2))
        return
    for d, c, clocks in out:
        rows = [("name", d.name), ("uuid", d.uuid), ("compute capability", f"{d.capability[0]}.{d.capability[1]} ({d.arch})"),
                ("SMs", str(d.sm_count)), ("memory", _gib(d.total_memory_bytes)), ("L2", _mib(d.l2_bytes)),
                ("max SM clock", _mhz(d.max_sm_clock_mhz)), ("max memory clock", _mhz(d.max_memory_clock_mhz)),
                ("SM clock now", _mhz((clocks or {}).get("sm_mhz"))),
                ("driver / CUDA runtime", f"{d.driver_version} / {d.cuda_runtime_version or '-'}")]
        rows += _ceiling_lines(c)
        click.echo(f"GPU {d.index}")
        click.echo(tabulate(rows, tablefmt="plain"))
        click.echo()
