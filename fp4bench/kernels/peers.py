"""Peer baselines: other libraries' FP4-weight GEMMs, checked and timed in the same run as fp4bench's kernels.

`humming` (w4a16-nvfp4, w4a16-mxfp4) and `humming-w4a8` (w4a8): humming-kernels 0.1.19 (vLLM's successor to
Marlin; `pip install 'fp4bench[peers]'`), JIT-compiled through NVRTC at the first call of a configuration.
Skipped with the reason where the package (that version) is missing, or where there is no GPU it runs on:
bf16 activations from sm_80 on; the fp8-activation path on Hopper (sm_90) only, the GPU whose fp8 accumulation
fp4bench models (`reference.fp8_mma_allowance`). GEMM problems, any M and L; N a multiple of 64 and K of 32
(bf16 activations) or 64 (fp8), humming's weight tile, and a shape its heuristics can tile (on sm_90 with bf16
activations N a multiple of 128); w4a8 also needs every batch's weight scales within 11 binades (below).

How humming is called (its own API, humming.transform / humming.tune / humming.forward):
- Plan, once per case: humming's layer configuration for (N, K, format) (`prepare_layer_config`) and its own
  heuristic launch configuration for this M (`get_heuristics_config`), passed to every call: one kernel is
  compiled (in `prepare`), and the check knows whether that configuration splits K (stream-K) and at which tile.
- Weight conversion, for every input set outside the timed region (`humming_operands`, in `prepare_inputs`,
  the engine's per-input-set preparation, as cublas-dense): the competition's tensors are already humming's unrepacked format -- the packed e2m1 row
  bytes (element 0 in the low nibble) read as little-endian int32 words (element i of a word at bits 4i..4i+3),
  the scales in their own dtype ([N, K/block]), and for NVFP4 the per-tensor fp32 scale of NVFP4 checkpoints
  (`weight_scale_2`), 1 here since fp4bench's NVFP4 has none; humming then repacks them on the GPU
  (`transform_humming_tensors`). For w4a8 the MXFP8 activations' e8m0 block scales become the fp32 group scales
  humming's Hopper path takes (exact); the e4m3 values are handed over as they are.
- The timed call: `humming_forward` per batch, writing C's [M, N] slice in place.

What is exact and what is bounded (read from humming 0.1.19's kernels, include/humming/):
- Operands. bf16 path: e2m1 is placed in bf16 bits with an exponent offset (value x 2^-126), the scale decoded
  to bf16 and multiplied by powers of two (arith/exp_offset.cuh), then weight x scale in bf16: e2m1 x e4m3 has
  at most 6 significant bits and e2m1 x 2^k 2, so the bf16 weight fed to the bf16 MMA is exact, and the offsets
  come back as powers of two in the epilogue (NVFP4: 2^7 with the tensor scale in fp32; MXFP4: 2^2). fp8 path:
  the e8m0 scales are fused into the weights (transform.process_fused_e8m0_scale): each group's scale relative
  to the batch's smallest becomes an exponent added to e2m1 to give e4m3 (datatype/dequant_fused.cuh, exact
  while the scales span at most 11 binades: e4m3 holds e2m1 x 2^0..2^11; beyond, humming clamps the smallest,
  so can_implement refuses it), the smallest as a power-of-two tensor scale.
- Accumulation. bf16 MMA adds in fp32 (exact products, as the reference). The fp8 path runs Hopper's fp8 wgmma,
  32 deep, each partial promoted to fp32 with the activations' group scale: declared with
  `reference.fp8_mma_allowance`, like every fp8-wgmma kernel here.
- Stream-K, where humming's configuration uses it (most decode and M = 128 shapes): a tile's K range is split
  between up to S = 10 CTAs (the cap in its scheduler.cuh, kMaxSlices); each slice's fp32 partial is rounded to
  the bf16 output and the slices are added in bf16 in global memory, slice 0 first and the rest in any order
  (epilogue/gmem_writer.cuh: store, then reduce-add). Not exact: `stream_k_allowance` is that bound (its
  docstring has the derivation). humming's own tests allow for it (testing/runner.py: isolated bf16 outliers
  with stream-K).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

import torch

from ..arch import ARCH_BY_CAPABILITY, Target
from ..case import one_line
from ..codecs import decode_scales
from ..formats import GEMM_FORMATS, GemmFormat, OperandFormat
from ..problem import Problem
from ..reference import dequantize_operands, fp8_mma_allowance
from .base import SOURCE_HEURISTIC, Kernel, RunFn

HUMMING_DIST = "humming-kernels"
# The version whose weight format, heuristics and stream-K reduction this module was written against.
HUMMING_VERSION = "0.1.19"
PEERS_EXTRA = "fp4bench[peers]"
# Compile targets of humming's bf16-activation path (its support matrix: bf16 from SM80 on).
BF16_ARCHS = tuple(arch for capability, arch in ARCH_BY_CAPABILITY.items() if capability >= (8, 0))
# fp4bench's element and scale names -> humming's dtype names.
HUMMING_DTYPES = MappingProxyType({"e2m1": "float4e2m1", "e4m3": "float8e4m3", "e8m0": "float8e8m0"})
# Weight tile of humming's repacking: N a multiple of 64, K of twice its 256-bit MMA depth in activations.
N_MULTIPLE = 64
MMA_DEPTH_BITS = 256
# Binades of e8m0 weight scales the fused fp8 path keeps exact (transform.process_fused_e8m0_scale).
FUSED_E8M0_SPAN = 11
# Stream-K locks humming's own layer allocates per layer (its HummingLayer).
STREAM_K_LOCKS = 2048
# At most this many CTAs add into one output tile (humming's scheduler.cuh, kMaxSlices).
STREAM_K_MAX_SLICES = 10
# float64 elements of one chunk of the stream-K bound's partial sums (256 MB, twice for the prefix sums).
ALLOWANCE_CHUNK_ELEMENTS = 1 << 25


def installed_version() -> str | None:
    """The installed humming-kernels version, or None (package metadata only: importing humming takes seconds)."""
    try:
        return importlib.metadata.version(HUMMING_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


def weight_schema_fields(op: OperandFormat) -> dict:
    """humming's HummingWeightSchema fields for an FP4 weight operand: e2m1 values with one scale per block along
    K; e4m3-scaled weights (NVFP4) also carry the per-tensor fp32 scale of NVFP4 checkpoints."""
    fields = {"b_dtype": HUMMING_DTYPES[op.element.name], "bs_dtype": HUMMING_DTYPES[op.scale.name],
              "weight_scale_group_size": op.block_size}
    if not op.scale.power_of_two:
        fields["weight_scale_2_type"] = "tensor"
    return fields


def input_schema_fields(op: OperandFormat) -> dict | None:
    """humming's HummingInputSchema fields for the activations: None for bf16 (taken as they are); block-scaled
    fp8 activations (MXFP8) are e4m3 values with one group scale per block along K."""
    if not op.block_scaled:
        return None
    return {"a_dtype": HUMMING_DTYPES[op.element.name], "input_scale_group_size": op.block_size}


def humming_weight_tensors(b: torch.Tensor, sfb: torch.Tensor, op: OperandFormat, batch: int) -> dict:
    """One batch of the competition's weight operand in humming's unrepacked weight format (pure torch, no copy
    where the batch is contiguous):
      weight        int32 [N, K/8]: the packed e2m1 bytes of each row read as little-endian int32, so element k
                    is bits 4(k % 8)..4(k % 8)+3 of word k // 8 (humming's pack order);
      weight_scale  [N, K/block] in the scale's own dtype (float8_e4m3fn or float8_e8m0fnu);
      weight_scale_2  fp32 [1] = 1, for e4m3-scaled weights (NVFP4's per-tensor scale; fp4bench's has none)."""
    packed = b[:, :, batch].contiguous().view(torch.uint8)
    tensors = {"weight": packed.view(torch.int32), "weight_scale": sfb[:, :, batch].contiguous()}
    if not op.scale.power_of_two:
        tensors["weight_scale_2"] = torch.ones(1, dtype=torch.float32, device=packed.device)
    return tensors


def humming_input_scales(sfa: torch.Tensor | None, op: OperandFormat, batch: int,
                         device: torch.device) -> torch.Tensor | None:
    """The fp32 group scales [M, K/block] humming's Hopper fp8 path takes for block-scaled activations (e8m0
    decoded exactly); None for bf16 activations."""
    if not op.block_scaled:
        return None
    return decode_scales(sfa[:, :, batch].to(device), op).contiguous()


@dataclass(frozen=True)
class HummingPlan:
    """What humming runs for one case: its layer configuration and its heuristic launch configuration for M."""

    layer_config: object   # humming.config.LayerConfig
    tuning: dict           # humming's get_heuristics_config for this M: its tuning_config

    @property
    def tuning_json(self) -> str:
        return json.dumps(self.tuning, sort_keys=True)

    @property
    def stream_k(self) -> bool:
        return bool(self.tuning.get("use_stream_k", False))

    @property
    def k_tile(self) -> int:
        return int(self.tuning["block_shape"][2])


def _device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


@lru_cache(maxsize=None)
def _plan(fmt_name: str, m: int, n: int, k: int, device_index: int) -> HummingPlan:
    from humming.schema import HummingInputSchema, HummingWeightSchema
    from humming.transform import prepare_layer_config
    from humming.tune import get_heuristics_config

    fmt = GEMM_FORMATS[fmt_name]
    inputs = input_schema_fields(fmt.a)
    with torch.cuda.device(device_index):
        config = prepare_layer_config(
            shape_n=n, shape_k=k, weight_schema=HummingWeightSchema(**weight_schema_fields(fmt.b)),
            input_schema=None if inputs is None else HummingInputSchema(**inputs), torch_dtype=fmt.out_dtype,
            device=device_index)
        # humming caches this dict: a copy, never the cached one.
        tuning = json.loads(json.dumps(get_heuristics_config(config, shape_m=m, device=device_index)))
    return HummingPlan(config, tuning)


def humming_plan(problem: Problem) -> HummingPlan:
    s = problem.shape
    return _plan(problem.fmt.name, s.m, s.n, s.k, _device_index(problem.device))


@dataclass(frozen=True)
class HummingOperands:
    """One batch's converted operands: the repacked weight and scales, and the activations' group scales."""

    weight: torch.Tensor
    weight_scale: torch.Tensor
    weight_scale_2: torch.Tensor | None
    input_scale: torch.Tensor | None


def humming_operands(data: tuple, fmt: GemmFormat, plan: HummingPlan) -> list[HummingOperands]:
    """The weight conversion of one input set, per batch (done outside the timed region): the competition's
    weight tensors in humming's format (`humming_weight_tensors`), repacked by humming for the plan's layer
    configuration, and the activations' group scales (`humming_input_scales`)."""
    from humming.transform import transform_humming_tensors

    a, b, sfa, sfb = data[:4]
    out = []
    with torch.cuda.device(b.device):
        for i in range(b.shape[2]):
            t = transform_humming_tensors(plan.layer_config, humming_weight_tensors(b, sfb, fmt.b, i))
            out.append(HummingOperands(t["weight"], t["weight_scale"], t.get("weight_scale_2"),
                                       humming_input_scales(sfa, fmt.a, i, a.device)))
    return out


def stream_k_factor(slices: int, unit: float) -> float:
    """F with |error| <= F * R (`stream_k_allowance`) for `slices` partials added through a format of unit
    roundoff `unit`."""
    runs = math.ceil(slices / 2)
    return unit * (slices + (slices - 1) * runs) / (1 - (slices - 1) * unit)


def stream_k_allowance(da: torch.Tensor, db: torch.Tensor, k_tile: int, out_dtype: torch.dtype,
                       slices: int = STREAM_K_MAX_SLICES) -> torch.Tensor:
    """float32 [M, N] bound on the error of adding C = A·Bᵀ (da [M, K], db [N, K], exact values) through the
    output dtype in at most `slices` stream-K slices that end on multiples of `k_tile`.

    With P_j the exact partial sum over the first j K tiles (P_0 = 0) and R = max_j P_j - min_j P_j, every slice's
    partial (a difference of two P_j) is at most R. Slice 0 is stored first and the others added in any order, so
    a running sum is slice 0 plus any subset of the others: at most ceil(S/2) runs of consecutive slices, each
    at most R, plus the error E made so far. Rounding each of the S partials and each of the S - 1 sums, with
    unit roundoff u of the output dtype:
        E <= u·S·R + u·(S - 1)·(ceil(S/2)·R + E)   =>   E <= u·(S + (S - 1)·ceil(S/2))·R / (1 - (S - 1)·u).
    For bf16 (u = 2^-8) and S = 10 that is 57.0·u·R, 0.22 R. A partial in fp32 (the MMA's accumulator) is
    within the reference's own accumulation allowance of its exact value; R is computed in float64."""
    m, k = da.shape
    n = db.shape[0]
    if k % k_tile:
        raise ValueError(f"K={k} is not a multiple of the K tile {k_tile}")
    tiles = k // k_tile
    a = da.double().reshape(m, tiles, k_tile).transpose(0, 1)                     # [T, M, k_tile]
    chunk = max(1, ALLOWANCE_CHUNK_ELEMENTS // (tiles * m))
    spread = torch.empty((m, n), dtype=torch.float64, device=da.device)
    for n0 in range(0, n, chunk):
        part = db[n0:n0 + chunk].double()
        b = part.reshape(part.shape[0], tiles, k_tile).permute(1, 2, 0)          # [T, k_tile, n]
        prefix = torch.bmm(a, b).cumsum(0)                                       # P_1 .. P_T
        spread[:, n0:n0 + chunk] = prefix.amax(0).clamp_min(0) - prefix.amin(0).clamp_max(0)
    unit = torch.finfo(out_dtype).eps / 2
    return (stream_k_factor(slices, unit) * spread).float()


class HummingGemm(Kernel):
    """humming-kernels' dense GEMM on the competition's tensors (see the module docstring)."""

    devices = ("cuda",)
    role = "baseline"
    needs: str = ""   # the GPUs it runs on, in words

    def unavailable_reason(self, target: Target) -> str | None:
        installed = installed_version()
        if installed is None:
            return f"{HUMMING_DIST} is not installed (pip install '{PEERS_EXTRA}')"
        if installed != HUMMING_VERSION:
            return f"{HUMMING_DIST} {installed} is installed; this baseline is written for {HUMMING_VERSION}"
        if target.device != "cuda":
            return f"needs {self.needs}; this machine has no GPU"
        if target.arch not in self.archs:
            return f"needs {self.needs}; this GPU is {target.arch.rstrip('a')}"
        return None

    def can_implement(self, problem: Problem) -> str | None:
        s, fmt = problem.shape, problem.fmt
        k_multiple = 2 * MMA_DEPTH_BITS // fmt.a.element.bits
        odd = [f"{name}={v} is not a multiple of {mult}" for name, v, mult in
               (("N", s.n, N_MULTIPLE), ("K", s.k, k_multiple)) if v % mult]
        if odd:
            return f"{' and '.join(odd)} (humming's weight tile)"
        if problem.device.type == "cuda":
            try:   # humming's heuristics assert what its tiles cannot cover (on sm_90 bf16: N an odd multiple of 64)
                humming_plan(problem)
            except AssertionError as e:
                return f"humming's heuristics have no launch configuration for this shape ({one_line(e)})"
        return None

    def approximation_allowance(self, problem: Problem) -> torch.Tensor | None:
        plan = humming_plan(problem)
        if not plan.stream_k:
            return None
        fmt = problem.fmt
        bound = torch.empty((problem.shape.m, problem.shape.n, problem.shape.l), dtype=torch.float32,
                            device=problem.device)
        for i in range(problem.shape.l):
            da, db = dequantize_operands(problem.data, fmt, i)
            bound[:, :, i] = stream_k_allowance(da, db, plan.k_tile, fmt.out_dtype)
        return bound

    def launch_config(self, problem: Problem) -> dict | None:
        t = humming_plan(problem).tuning
        block_m, block_n, block_k = t["block_shape"]
        return {"block_m": block_m, "block_n": block_n, "block_k": block_k, "stream_k": t.get("use_stream_k"),
                "stages": t.get("num_stages"), "mma": t.get("mma_type"), "source": SOURCE_HEURISTIC}

    def prepare_inputs(self, problem: Problem, data) -> tuple:
        """(data, per batch humming's repacked weights and scales and the activations' group scales): the
        conversion, redone whenever the input set's contents change, is not timed."""
        return data, humming_operands(data, problem.fmt, humming_plan(problem))

    def prepare(self, problem: Problem) -> RunFn:
        from humming.forward import humming_forward
        from humming.kernel.humming import HummingKernel

        device = problem.device
        plan = humming_plan(problem)
        layer_config, tuning = plan.layer_config, plan.tuning_json
        with torch.cuda.device(device):
            # The compile (NVRTC) happens here, with the arguments every call passes.
            HummingKernel.prepare_kernels(layer_config.to_str(), None, tuning, _device_index(device))
        locks = torch.zeros(STREAM_K_LOCKS, dtype=torch.int32, device=device)

        def run(prepared) -> torch.Tensor:
            data, operands = prepared
            a, c = data[0], data[6]
            for i, ops in enumerate(operands):
                humming_forward(layer_config, inputs=a[:, :, i], weight=ops.weight, weight_scale=ops.weight_scale,
                                weight_scale_2=ops.weight_scale_2, outputs=c[:, :, i], input_scale=ops.input_scale,
                                locks=locks, tuning_config=tuning)
            return c

        return run


class HummingW4a16(HummingGemm):
    name = "humming"
    formats = ("w4a16-nvfp4", "w4a16-mxfp4")
    archs = BF16_ARCHS
    needs = "an sm_80 or newer GPU"
    math_path = "bf16"
    description = "humming-kernels: bf16 x FP4 weights repacked outside the timed region, bf16 MMA"


class HummingW4a8(HummingGemm):
    name = "humming-w4a8"
    formats = ("w4a8",)
    archs = ("sm_90a",)
    needs = "sm_90"
    math_path = "fp8"
    description = "humming-kernels: MXFP8 x MXFP4 weights (scales fused into e4m3) on fp8 wgmma"

    def can_implement(self, problem: Problem) -> str | None:
        reason = super().can_implement(problem)
        if reason:
            return reason
        codes = problem.sfb.view(torch.uint8).to(torch.int16)
        span = int((codes.amax(dim=(0, 1)) - codes.amin(dim=(0, 1))).max())
        if span > FUSED_E8M0_SPAN:
            return (f"weight scales span {span} binades; humming's fused e8m0 path keeps {FUSED_E8M0_SPAN} "
                    f"exact and clamps the rest")
        return None

    def approximation_allowance(self, problem: Problem) -> torch.Tensor:
        stream_k = super().approximation_allowance(problem)
        fp8 = fp8_mma_allowance(problem)
        return fp8 if stream_k is None else fp8 + stream_k


KERNELS = (HummingW4a16(), HummingW4a8())
