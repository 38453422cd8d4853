"""The inputs of the public GPU MODE NVFP4 competition's four problems, byte for byte.

`generate_input(problem, device=..., **case)` returns what `generate_input` in gpu-mode/reference-kernels
problems/nvidia/<problem>/reference.py returns for the same case (the keys of that problem's task.yml): the same
Python structure, dtypes, shapes, strides, devices and bytes. It was written from reading that code; none of it
is copied here.

Constraints:
  * Bytes match only because every random draw is the competition's: same torch function, shape, dtype, bounds
    and device, in the same order after `torch.manual_seed(seed)`. That includes the draws whose values are
    mostly thrown away (the scale-layout pre-fills below); dropping one shifts every later tensor.
  * `torch.manual_seed` reseeds the process-wide CPU and CUDA generators, as the competition does.
  * On CUDA the bytes can also depend on the GPU model: PyTorch sizes its random kernels' grids from the device's
    multiprocessor count. Compare against the competition's code run on the same GPU, not digests taken elsewhere.
  * The one place without defined bytes: nvfp4_dual_gemm builds its permuted scales in `torch.empty`, so where the
    128x4 layout pads (rows not a multiple of 128 or K not a multiple of 64) its bytes are whatever memory held;
    here they are zero. Every task.yml case of that problem is unpadded.
  * Stricter than the competition on malformed cases: a grouped case's m, n and k must have exactly g entries
    (the competition silently uses the first g), and every size must be an integer.

Per problem, in draw order ([X, Y, L] tensors are (L, X, Y) contiguous tensors permuted (1, 2, 0); "pre-fill" is
a (L, ceil(rows/128), ceil(K/64), 32, 4, 4) draw that becomes the permuted scales, whose valid bytes are then
overwritten, so only its padding survives):
  nvfp4_gemm (m, n, k, l, seed): a, b int8 uniform over all 256 bytes; c fp16 normal; sfa values 0..3, its
      pre-fill 0..3; sfb likewise. Returns (a, b, sfa, sfb, sfa_permuted, sfb_permuted, c).
  nvfp4_gemv (m, k, l, seed): a uint8 0..3 (low nibble only); b likewise with 128 rows (only row 0 is the
      vector); c [m, 1, l]; sfa values 0..2 and pre-fill 0..2; sfb likewise with 128 rows. Same 7-tuple.
  nvfp4_dual_gemm (m, n, k, l, seed): a, b1, b2 uint8 uniform over 0..254 masked with 0xBB (sign and two low bits
      of each nibble); c; sfa, sfb1, sfb2 fp32 uniform [0, 1) rounded to e4m3 (no pre-fill draw). Returns
      (a, b1, b2, sfa, sfb1, sfb2, sfa_permuted, sfb1_permuted, sfb2_permuted, c).
  nvfp4_group_gemm (m, n, k lists of g entries, g, seed; L = 1): per group a, b (as dual_gemm), c on `device`;
      sfa, sfb values 1..2 drawn from the CPU generator and returned on the CPU whatever `device` is; then the
      sfa and sfb pre-fills (1..2) on `device`. Returns ([(a, b, c)], [(sfa, sfb)], [(sfa_permuted,
      sfb_permuted)], [(m, n, k, 1)]).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from .layouts import TILE_COLS, TILE_ROWS, ceil_div, from_competition, to_competition

PROBLEMS = ("nvfp4_gemm", "nvfp4_gemv", "nvfp4_dual_gemm", "nvfp4_group_gemm")

# The keys of each problem's task.yml cases, as spelled there.
CASE_KEYS = {
    "nvfp4_gemm": ("m", "n", "k", "l", "seed"),
    "nvfp4_gemv": ("m", "k", "l", "seed"),
    "nvfp4_dual_gemm": ("m", "n", "k", "l", "seed"),
    "nvfp4_group_gemm": ("m", "n", "k", "g", "seed"),
}

# e2m1 values per e4m3 scale.
NVFP4_BLOCK = 16
# GEMV pads its vector and the vector's scales to one 128-row tile so that `_scaled_mm` accepts them.
GEMV_PADDED_ROWS = 128
# Keeps the sign bit and the two low bits of each e2m1 nibble: values {0, +-0.5, +-1, +-1.5}.
SMALL_E2M1_MASK = 0b1011_1011


def generate_input(problem: str, *, device: str | torch.device = "cuda", **case):
    """The competition's inputs for one task.yml case of `problem`; see the module docstring."""
    if problem not in PROBLEMS:
        raise ValueError(f"unknown competition problem {problem!r}; expected one of {', '.join(PROBLEMS)}")
    _check_case_keys(problem, case)
    device = torch.device(device)
    if problem == "nvfp4_group_gemm":
        g = _as_int(problem, "g", case["g"])
        sizes = {key: _as_int_list(problem, key, case[key], g) for key in ("m", "n", "k")}
        return _group_gemm(sizes["m"], sizes["n"], sizes["k"], _as_int(problem, "seed", case["seed"]), device)
    ints = {key: _as_int(problem, key, value) for key, value in case.items()}
    if problem == "nvfp4_gemm":
        return _gemm(**ints, device=device)
    if problem == "nvfp4_gemv":
        return _gemv(**ints, device=device)
    return _dual_gemm(**ints, device=device)


def _check_case_keys(problem: str, case: dict) -> None:
    expected = CASE_KEYS[problem]
    missing = [key for key in expected if key not in case]
    extra = sorted(key for key in case if key not in expected)
    if missing or extra:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else []
        )
        raise ValueError(f"{problem} case: {'; '.join(problems)} (its task.yml keys are {', '.join(expected)})")


def _as_int(problem: str, key: str, value) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{problem} case: {key} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{problem} case: {key} must be an integer, got {value!r}") from None


def _as_int_list(problem: str, key: str, values, g: int) -> list[int]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise ValueError(f"{problem} case: {key} must be a list of {g} integers (one per group), got {values!r}")
    if len(values) != g:
        raise ValueError(f"{problem} case: {key} has {len(values)} entries but g is {g}")
    return [_as_int(problem, f"{key}[{i}]", v) for i, v in enumerate(values)]


def _batch_last(batch_first: torch.Tensor) -> torch.Tensor:
    """(L, rows, cols) -> the competition's [rows, cols, L] view (rows-by-cols matrices, batch last)."""
    return batch_first.permute(1, 2, 0)


def _as_e2m1(packed: torch.Tensor) -> torch.Tensor:
    return _batch_last(packed).view(torch.float4_e2m1fn_x2)


def _small_e2m1(l: int, rows: int, k: int, device: torch.device) -> torch.Tensor:
    """Packed e2m1 with values in {0, +-0.5, +-1, +-1.5} (dual and grouped GEMM); 255 is never drawn."""
    packed = torch.randint(255, size=(l, rows, k // 2), dtype=torch.uint8, device=device)
    return _as_e2m1(packed & SMALL_E2M1_MASK)


def _random_c(l: int, m: int, n: int, device: torch.device) -> torch.Tensor:
    return _batch_last(torch.randn((l, m, n), dtype=torch.float16, device=device))


def _prefill_shape(l: int, rows: int, scale_cols: int) -> tuple[int, ...]:
    return (l, ceil_div(rows, TILE_ROWS), ceil_div(scale_cols, TILE_COLS), 32, 4, TILE_COLS)


def _permuted(scales: torch.Tensor, prefill: torch.Tensor | None) -> torch.Tensor:
    """[rows, cols, L] scales -> the competition's permuted view, padding bytes taken from `prefill`.

    The competition draws the contiguous (L, rest_rows, rest_cols, 32, 4, 4) tensor first and writes the valid
    scales into it, so its padding keeps the drawn bytes. None: no draw (zero padding).
    """
    rows, cols, _ = scales.shape
    rest_rows, rest_cols = ceil_div(rows, TILE_ROWS), ceil_div(cols, TILE_COLS)
    if prefill is None or (rows == rest_rows * TILE_ROWS and cols == rest_cols * TILE_COLS):
        return to_competition(scales)
    # The pre-fill as a padded row-major [rest_rows*128, rest_cols*4, L] matrix, valid corner overwritten.
    padded = from_competition(prefill.permute(3, 4, 1, 5, 2, 0), rest_rows * TILE_ROWS, rest_cols * TILE_COLS)
    padded[:rows, :cols] = scales
    return to_competition(padded)


def _integer_scales(low: int, high: int, l: int, rows: int, scale_cols: int, device: torch.device):
    """e4m3 scales with integer values in [low, high), then their permuted view over a pre-fill of the same range.

    Returns ([rows, scale_cols, L], permuted); the pre-fill is drawn right after the values, as the competition does.
    """
    drawn = torch.randint(low, high, (l, rows, scale_cols), dtype=torch.int8, device=device)
    scales = _batch_last(drawn.to(torch.float8_e4m3fn))
    prefill = torch.randint(low, high, _prefill_shape(l, rows, scale_cols), dtype=torch.int8, device=device)
    return scales, _permuted(scales, prefill.to(torch.float8_e4m3fn))


def _gemm(m: int, n: int, k: int, l: int, seed: int, device: torch.device) -> tuple:
    torch.manual_seed(seed)
    a = _as_e2m1(torch.randint(-128, 128, (l, m, k // 2), dtype=torch.int8, device=device))
    b = _as_e2m1(torch.randint(-128, 128, (l, n, k // 2), dtype=torch.int8, device=device))
    c = _random_c(l, m, n, device)
    scale_cols = ceil_div(k, NVFP4_BLOCK)
    sfa, sfa_permuted = _integer_scales(0, 4, l, m, scale_cols, device)
    sfb, sfb_permuted = _integer_scales(0, 4, l, n, scale_cols, device)
    return (a, b, sfa, sfb, sfa_permuted, sfb_permuted, c)


def _gemv(m: int, k: int, l: int, seed: int, device: torch.device) -> tuple:
    torch.manual_seed(seed)
    a = _as_e2m1(torch.randint(0, 4, (l, m, k // 2), dtype=torch.uint8, device=device))
    b = _as_e2m1(torch.randint(0, 4, (l, GEMV_PADDED_ROWS, k // 2), dtype=torch.uint8, device=device))
    c = _random_c(l, m, 1, device)
    scale_cols = ceil_div(k, NVFP4_BLOCK)
    sfa, sfa_permuted = _integer_scales(0, 3, l, m, scale_cols, device)
    sfb, sfb_permuted = _integer_scales(0, 3, l, GEMV_PADDED_ROWS, scale_cols, device)
    return (a, b, sfa, sfb, sfa_permuted, sfb_permuted, c)


def _dual_gemm(m: int, n: int, k: int, l: int, seed: int, device: torch.device) -> tuple:
    torch.manual_seed(seed)
    a = _small_e2m1(l, m, k, device)
    b1 = _small_e2m1(l, n, k, device)
    b2 = _small_e2m1(l, n, k, device)
    c = _random_c(l, m, n, device)
    scale_cols = ceil_div(k, NVFP4_BLOCK)
    scales = [
        _batch_last(torch.rand((l, rows, scale_cols), dtype=torch.float32, device=device).to(torch.float8_e4m3fn))
        for rows in (m, n, n)
    ]
    permuted = [_permuted(s, None) for s in scales]
    return (a, b1, b2, *scales, *permuted, c)


def _group_gemm(ms: list[int], ns: list[int], ks: list[int], seed: int, device: torch.device) -> tuple:
    torch.manual_seed(seed)
    l = 1
    abc, scales, permuted, problem_sizes = [], [], [], []
    for m, n, k in zip(ms, ns, ks):
        a = _small_e2m1(l, m, k, device)
        b = _small_e2m1(l, n, k, device)
        c = _random_c(l, m, n, device)
        scale_cols = ceil_div(k, NVFP4_BLOCK)
        # No device argument: these come from the CPU generator and stay on the CPU, as in the competition.
        sfa = _batch_last(torch.randint(1, 3, (l, m, scale_cols), dtype=torch.int8).to(torch.float8_e4m3fn))
        sfb = _batch_last(torch.randint(1, 3, (l, n, scale_cols), dtype=torch.int8).to(torch.float8_e4m3fn))
        pair = []
        for s, rows in ((sfa, m), (sfb, n)):
            prefill = torch.randint(1, 3, _prefill_shape(l, rows, scale_cols), dtype=torch.int8, device=device)
            pair.append(_permuted(s.to(device), prefill.to(torch.float8_e4m3fn)))
        abc.append((a, b, c))
        scales.append((sfa, sfb))
        permuted.append(tuple(pair))
        problem_sizes.append((m, n, k, l))
    return (abc, scales, permuted, problem_sizes)
