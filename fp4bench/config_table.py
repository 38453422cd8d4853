"""Tuned launch configurations, stored in the repository per GPU model (fp4bench/tuned/<gpu-slug>.json).

Kernels with launch choices read this table instead of timing candidates at run time, so the same commit on
the same GPU model always runs the same configuration. `fp4bench tune` (or `run --tune`) writes it.

File (schema `SCHEMA`, version `VERSION`):
    {"schema": "fp4bench-tuned-configs", "version": 1, "gpu": "NVIDIA H200",
     "entries": [{"kernel": "sm90-nvfp4", "format": "nvfp4", "shape": {"m": 128, "n": 7168, "k": 16384, "l": 1},
                  "config": {...launch parameters...}, "median_us": 135.2, "rse": 0.004,
                  "candidates": [{"config": {...}, "median_us": ..., "rse": ...}, ...], "tuned": "<date>"}]}
Entries are keyed by (kernel, format, M, N, K, L): the seed does not change a launch. A shape without an entry
gets the kernel's documented heuristic.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from filelock import FileLock

from .arch import gpu_slug
from .problem import Shape

SCHEMA = "fp4bench-tuned-configs"
VERSION = 1
TABLE_DIR_ENV = "FP4BENCH_TUNED_DIR"


class ConfigTableError(ValueError):
    pass


def table_dir() -> Path:
    """Where the tables live: FP4BENCH_TUNED_DIR, else the package's tuned/ folder."""
    env = os.environ.get(TABLE_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parent / "tuned"


def table_path(gpu_name: str) -> Path:
    return table_dir() / f"{gpu_slug(gpu_name)}.json"


def entry_key(kernel: str, fmt: str, shape: Shape) -> tuple:
    return (kernel, fmt, shape.m, shape.n, shape.k, shape.l)


@dataclass
class ConfigTable:
    gpu: str
    entries: dict[tuple, dict]
    path: Path

    def lookup(self, kernel: str, fmt: str, shape: Shape) -> dict | None:
        """The stored entry (config, times, candidates) for this kernel, format and shape, or None."""
        return self.entries.get(entry_key(kernel, fmt, shape))

    def put(self, kernel: str, fmt: str, shape: Shape, entry: dict) -> None:
        self.entries[entry_key(kernel, fmt, shape)] = {
            "kernel": kernel, "format": fmt, "shape": {"m": shape.m, "n": shape.n, "k": shape.k, "l": shape.l},
            **entry}

    def save(self) -> Path:
        from .results import atomic_write_text

        ordered = [self.entries[k] for k in sorted(self.entries)]
        doc = {"schema": SCHEMA, "version": VERSION, "gpu": self.gpu, "entries": ordered}
        atomic_write_text(self.path, json.dumps(doc, indent=1) + "\n")
        _cached_table.cache_clear()
        return self.path


def store_entry(gpu_name: str, kernel: str, fmt: str, shape: Shape, entry: dict) -> Path:
    """Add or replace one entry of the GPU model's table; workers on several GPUs may store at once."""
    path = table_path(gpu_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_suffix(".lock")):   # read-modify-write of one file by several processes
        table = read_table(path, gpu_name)
        table.put(kernel, fmt, shape, entry)
        return table.save()


def read_table(path: Path, gpu_name: str) -> ConfigTable:
    """The table at `path` (an empty one when the file does not exist); a malformed file is an error."""
    if not path.exists():
        return ConfigTable(gpu_name, {}, path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigTableError(f"{path}: unreadable tuned-configuration table ({e})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or doc.get("version") != VERSION:
        raise ConfigTableError(f"{path}: not a version-{VERSION} {SCHEMA} file")
    entries = {}
    for e in doc.get("entries", []):
        s = e["shape"]
        entries[entry_key(e["kernel"], e["format"], Shape(s["m"], s["n"], s["k"], s.get("l", 1)))] = e
    return ConfigTable(doc.get("gpu", gpu_name), entries, path)


@lru_cache(maxsize=None)
def _cached_table(path: str, gpu_name: str) -> ConfigTable:
    return read_table(Path(path), gpu_name)


def table_for(gpu_name: str) -> ConfigTable:
    """The table of this GPU model (cached per process; `ConfigTable.save` drops the cache)."""
    return _cached_table(str(table_path(gpu_name)), gpu_name)


def tuned_config(gpu_name: str, kernel: str, fmt: str, shape: Shape) -> dict | None:
    """The stored configuration for this case on this GPU model, or None."""
    entry = table_for(gpu_name).lookup(kernel, fmt, shape)
    return None if entry is None else dict(entry["config"])
