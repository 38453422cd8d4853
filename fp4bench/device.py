"""GPU facts through cuda-python (`cuda.bindings.driver`), and the measured ceilings that define SOL.

- `query_devices()` reads every visible GPU through the driver API: name, UUID, compute capability, SM
  count, memory, L2 size, the SM and memory clocks the driver reports as maximum, and the driver and CUDA
  runtime versions. No GPU, no driver or no cuda-python: `NoDeviceError` with one line.
- `current_clocks(index)` asks nvidia-smi for the clocks now (best effort, None when it is missing): a
  fingerprint records them at the start and the end of a run.
- `measure_ceilings(index)` times a device-to-device copy (bytes read + written) and dense bf16 and fp8
  (and, on GPUs with FP4 tensor cores, FP4) GEMMs on large random operands with `fp4bench.timing`.
  Results are cached per GPU UUID in `$FP4BENCH_CACHE_DIR` (default ~/.cache/fp4bench) as
  ceilings-<uuid>.json; a cache entry is trusted until `--measure` is asked for again.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from .sol import Ceilings

CACHE_ENV = "FP4BENCH_CACHE_DIR"
CEILING_COPY_BYTES = 1 << 30          # large enough that L2 plays no part
CEILING_GEMM_SIZE = 8192              # M = N = K: fills every SM for many waves
CEILING_GEMM_SIZE_QUICK = 4096
CEILING_BUDGET_S = 1.0


class NoDeviceError(RuntimeError):
    """No usable GPU: the message is one line meant for the user."""


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    uuid: str
    capability: tuple[int, int]
    sm_count: int
    total_memory_bytes: int
    l2_bytes: int
    max_sm_clock_mhz: float | None
    max_memory_clock_mhz: float | None
    memory_bus_width_bits: int | None
    driver_version: str
    cuda_runtime_version: str | None

    @property
    def arch(self) -> str:
        from .arch import Target

        return Target("cuda", self.index, self.capability, self.name).arch

    def to_dict(self) -> dict:
        d = asdict(self)
        d["capability"] = list(self.capability)
        d["arch"] = self.arch
        return d


def _version(v: int) -> str:
    """CUDA's integer version (1000 * major + 10 * minor) as 'major.minor'."""
    return f"{v // 1000}.{(v % 1000) // 10}"


def _driver():
    try:
        from cuda.bindings import driver
    except ImportError as e:
        raise NoDeviceError(f"cuda-python is not installed ({e}); pip install cuda-python") from None
    return driver


def _check(driver, result, what: str):
    err, *values = result
    if err != driver.CUresult.CUDA_SUCCESS:
        name = getattr(err, "name", str(err))
        if err == driver.CUresult.CUDA_ERROR_NO_DEVICE:
            raise NoDeviceError("no CUDA GPU found: the driver sees no device")
        raise NoDeviceError(f"CUDA driver call {what} failed: {name}")
    return values[0] if len(values) == 1 else values


def _runtime_version() -> str | None:
    try:
        from cuda.bindings import runtime

        err, v = runtime.cudaRuntimeGetVersion()
        return _version(v) if err == runtime.cudaError_t.cudaSuccess else None
    except Exception:   # the runtime library is optional for a device query
        return None


def query_devices() -> list[DeviceInfo]:
    """Every GPU the driver sees, in CUDA_VISIBLE_DEVICES order."""
    driver = _driver()
    try:
        _check(driver, driver.cuInit(0), "cuInit")
    except NoDeviceError:
        raise
    except Exception as e:   # the driver library itself is missing: cuda-python raises its own types
        raise NoDeviceError(f"no NVIDIA driver found ({type(e).__name__})") from None
    count = _check(driver, driver.cuDeviceGetCount(), "cuDeviceGetCount")
    if count == 0:
        raise NoDeviceError("no CUDA GPU found: the driver sees no device")
    drv_version = _version(_check(driver, driver.cuDriverGetVersion(), "cuDriverGetVersion"))
    rt_version = _runtime_version()
    A = driver.CUdevice_attribute
    out = []
    for i in range(count):
        dev = _check(driver, driver.cuDeviceGet(i), "cuDeviceGet")

        def attr(a, dev=dev):
            return _check(driver, driver.cuDeviceGetAttribute(a, dev), "cuDeviceGetAttribute")

        def khz_to_mhz(v):
            return v / 1000.0 if v else None

        raw_name = _check(driver, driver.cuDeviceGetName(256, dev), "cuDeviceGetName")
        name = raw_name.split(b"\0", 1)[0].decode() if isinstance(raw_name, bytes) else str(raw_name)
        uuid_bytes = bytes(_check(driver, driver.cuDeviceGetUuid(dev), "cuDeviceGetUuid").bytes)
        h = uuid_bytes.hex()
        uuid = f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
        out.append(DeviceInfo(
            index=i, name=name, uuid=uuid,
            capability=(attr(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                        attr(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)),
            sm_count=attr(A.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
            total_memory_bytes=int(_check(driver, driver.cuDeviceTotalMem(dev), "cuDeviceTotalMem")),
            l2_bytes=attr(A.CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE),
            max_sm_clock_mhz=khz_to_mhz(attr(A.CU_DEVICE_ATTRIBUTE_CLOCK_RATE)),
            max_memory_clock_mhz=khz_to_mhz(attr(A.CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)),
            memory_bus_width_bits=attr(A.CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH) or None,
            driver_version=drv_version, cuda_runtime_version=rt_version))
    return out


def query_device(index: int) -> DeviceInfo:
    devices = query_devices()
    if not 0 <= index < len(devices):
        raise NoDeviceError(f"GPU {index} does not exist; this machine has {len(devices)}")
    return devices[index]


def current_clocks(index: int) -> dict | None:
    """SM and memory clocks (MHz) now, and the GPU temperature, through nvidia-smi; None when unavailable."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = visible.split(",")[index].strip() if visible else str(index)
    try:
        out = subprocess.run([smi, "-i", physical, "--query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    keys = ("sm_mhz", "mem_mhz", "temperature_c", "power_w")
    values = [v.strip() for v in out.stdout.strip().splitlines()[0].split(",")]
    result = {}
    for key, v in zip(keys, values):
        try:
            result[key] = float(v)
        except ValueError:
            result[key] = None
    return result


# ---------------------------------------------------------------------------------------------
# measured ceilings
# ---------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fp4bench")


def ceilings_path(uuid: str) -> Path:
    return cache_dir() / f"ceilings-{uuid}.json"


def load_ceilings(uuid: str) -> Ceilings | None:
    p = ceilings_path(uuid)
    try:
        return Ceilings.from_dict(json.loads(p.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_ceilings(uuid: str, ceilings: Ceilings) -> Path:
    from .results import atomic_write_text

    p = ceilings_path(uuid)
    atomic_write_text(p, json.dumps(ceilings.to_dict(), indent=2) + "\n")
    return p


def _median_seconds(fn, device, budget_s: float) -> float:
    from .timing import StoppingRule, measure

    # Ceiling problems are far larger than L2, so no flush is needed; one input set suffices.
    rule = StoppingRule(budget_s=budget_s, min_samples=5)
    return measure(lambda _: fn(), [()], device=device, rule=rule, cold_l2=False).stats.median


def _gemm_rates(size: int, device, budget_s: float, fp4: bool) -> dict[str, float]:
    import torch

    flops = 2 * size ** 3
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=gen, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, generator=gen, dtype=torch.bfloat16)
    rates = {"bf16": flops / _median_seconds(lambda: a @ b.T, device, budget_s)}
    a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)
    one = torch.ones((), device=device)
    rates["fp8"] = flops / _median_seconds(
        lambda: torch._scaled_mm(a8, b8.T, one, one, out_dtype=torch.bfloat16, use_fast_accum=True),
        device, budget_s)
    if fp4:
        a4 = torch.randint(-128, 128, (size, size // 2), dtype=torch.int8, device=device).view(torch.float4_e2m1fn_x2)
        b4 = torch.randint(-128, 128, (size, size // 2), dtype=torch.int8, device=device).view(torch.float4_e2m1fn_x2)
        scales = torch.ones(size * size // 16, device=device).to(torch.float8_e4m3fn)
        try:
            rates["fp4"] = flops / _median_seconds(
                lambda: torch._scaled_mm(a4, b4.T, scales, scales, out_dtype=torch.bfloat16), device, budget_s)
        except RuntimeError:
            pass   # this torch/cuBLAS lacks the FP4 path: SOL stays undefined for fp4 kernels
    return rates


def measure_ceilings(index: int = 0, quick: bool = False) -> Ceilings:
    """Copy bandwidth and dense matrix rates of GPU `index`, measured now."""
    import torch

    from .arch import FP4_TENSOR_CORE_ARCHS

    info = query_device(index)
    device = torch.device("cuda", index)
    torch.cuda.set_device(device)
    budget = CEILING_BUDGET_S / (2 if quick else 1)
    nbytes = CEILING_COPY_BYTES // (2 if quick else 1)
    src = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    copy_s = _median_seconds(partial(dst.copy_, src), device, budget)
    del src, dst
    size = CEILING_GEMM_SIZE_QUICK if quick else CEILING_GEMM_SIZE
    rates = _gemm_rates(size, device, budget, info.arch in FP4_TENSOR_CORE_ARCHS)
    torch.cuda.empty_cache()
    return Ceilings(copy_bytes_per_s=2 * nbytes / copy_s, matrix_flops_per_s=rates,
                    measured_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), gpu=info.name)


def ceilings_for(index: int, measure_if_missing: bool = True, quick: bool = True) -> Ceilings | None:
    """The cached ceilings of GPU `index`, measured (and cached) first when missing and allowed."""
    info = query_device(index)
    cached = load_ceilings(info.uuid)
    if cached is not None or not measure_if_missing:
        return cached
    measured = measure_ceilings(index, quick=quick)
    save_ceilings(info.uuid, measured)
    return measured
