"""The humming peer baselines (fp4bench.kernels.peers): registered and listed, skipped with the reason where
humming-kernels or the GPU is missing, the weight conversion checked against a decode of the original tensors,
the stream-K bound checked against a simulation of the reduction it bounds, and (marked `gpu`) the baselines
against the exact reference. Fresh random data in every test.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from fp4bench.arch import CPU, Target, current_target
from fp4bench.cli import main
from fp4bench.formats import BF16, E2M1_MAGNITUDES, E8M0_BIAS, GEMM_FORMATS, MXFP4, MXFP8, NVFP4
from fp4bench.kernels import all_kernels, get_kernel, peers
from fp4bench.pipeline import check_case
from fp4bench.problem import Shape, assemble, generate
from fp4bench.reference import dequantize_operands

HOPPER = Target("cuda", 0, (9, 0), "NVIDIA H200")
TURING = Target("cuda", 0, (7, 5), "Tesla T4")
ADA = Target("cuda", 0, (8, 9), "NVIDIA L4")
FORMATS = {"humming": ("w4a16-nvfp4", "w4a16-mxfp4"), "humming-w4a8": ("w4a8",)}
BF16_UNIT = 2.0 ** -8


def fresh_seed() -> int:
    return int(torch.randint(0, 2 ** 30, ()).item())


@pytest.fixture
def installed(monkeypatch):
    """Pretend humming-kernels is installed at the version the baselines need (no import happens)."""
    monkeypatch.setattr(peers, "installed_version", lambda: peers.HUMMING_VERSION)


def test_humming_baselines_are_registered_with_their_formats():
    kernels = all_kernels()
    for name, formats in FORMATS.items():
        assert kernels[name].role == "baseline" and kernels[name].formats == formats
    assert kernels["humming-w4a8"].math_path == "fp8" and kernels["humming"].math_path == "bf16"


def test_fp4bench_list_shows_humming_with_the_reason_it_does_not_run_here():
    result = CliRunner().invoke(main, ["list", "--device", "cpu", "--role", "baseline"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("humming")]
    assert [r.split()[0] for r in rows] == ["humming", "humming-w4a8"]
    assert all(" no: " in r for r in rows)
    # The reason wraps inside its column: every word of it is in the table.
    reason = get_kernel("humming").unavailable_reason(CPU)
    words = set(result.output.replace("-", " ").split())
    assert reason is not None and set(reason.replace("-", " ").split()) <= words, (reason, result.output)


@pytest.mark.parametrize("name", list(FORMATS))
def test_skipped_with_the_reason_when_humming_is_absent(monkeypatch, name):
    monkeypatch.setattr(peers, "installed_version", lambda: None)
    kernel = get_kernel(name)
    problem = generate(Shape(128, 256, 512, seed=fresh_seed()), GEMM_FORMATS[FORMATS[name][0]])
    expected = "humming-kernels is not installed (pip install 'fp4bench[peers]')"
    for target in (CPU, HOPPER):   # the package first: the one thing to install, wherever this runs
        assert kernel.reason_to_skip(problem, target) == expected
    outcome = check_case(kernel, problem.shape, problem.fmt, CPU, [1, 43])
    assert (outcome.status, outcome.reason) == ("skip", expected)


def test_skipped_for_another_version_of_humming(monkeypatch):
    monkeypatch.setattr(peers, "installed_version", lambda: "0.2.0")
    reason = get_kernel("humming").unavailable_reason(HOPPER)
    assert reason == "humming-kernels 0.2.0 is installed; this baseline is written for 0.1.19"


def test_needs_a_gpu_it_runs_on(installed):
    w4a16, w4a8 = get_kernel("humming"), get_kernel("humming-w4a8")
    assert w4a16.unavailable_reason(CPU) == "needs an sm_80 or newer GPU; this machine has no GPU"
    assert w4a16.unavailable_reason(TURING) == "needs an sm_80 or newer GPU; this GPU is sm_75"
    assert w4a16.unavailable_reason(ADA) is None and w4a16.unavailable_reason(HOPPER) is None
    assert w4a8.unavailable_reason(CPU) == "needs sm_90; this machine has no GPU"
    assert w4a8.unavailable_reason(ADA) == "needs sm_90; this GPU is sm_89"
    assert w4a8.unavailable_reason(HOPPER) is None


def test_shapes_off_humming_weight_tile_are_refused_with_the_reason(installed):
    seed = fresh_seed()
    w4a16, w4a8 = get_kernel("humming"), get_kernel("humming-w4a8")
    odd_n = generate(Shape(16, 200, 512, seed=seed), GEMM_FORMATS["w4a16-nvfp4"])
    assert w4a16.reason_to_skip(odd_n, HOPPER) == "N=200 is not a multiple of 64 (humming's weight tile)"
    odd_k = generate(Shape(16, 128, 96, seed=seed), GEMM_FORMATS["w4a8"])
    assert w4a8.reason_to_skip(odd_k, HOPPER) == "K=96 is not a multiple of 64 (humming's weight tile)"
    # K = 96 is fine with bf16 activations (twice the 16-deep MMA), and so are M and L of any size.
    fine = generate(Shape(77, 128, 96, 2, seed=seed), GEMM_FORMATS["w4a16-mxfp4"])
    assert w4a16.reason_to_skip(fine, HOPPER) is None


def test_w4a8_refuses_weight_scales_past_the_fused_span(installed):
    fmt = GEMM_FORMATS["w4a8"]
    p = generate(Shape(16, 128, 256, 2, seed=fresh_seed()), fmt)
    kernel = get_kernel("humming-w4a8")
    assert kernel.can_implement(p) is None   # fp4bench's MX scales span 2^-3..2^3: 6 binades
    codes = p.sfb.view(torch.uint8).clone()
    codes[0, 0, 1], codes[5, 3, 1] = E8M0_BIAS - 6, E8M0_BIAS + 6   # 12 binades in batch 1
    wide = assemble(p.shape, fmt, p.a, p.b, p.sfa, codes.view(p.sfb.dtype), p.c, "cpu")
    assert kernel.can_implement(wide) == ("weight scales span 12 binades; humming's fused e8m0 path keeps 11 "
                                          "exact and clamps the rest")


def test_schema_fields_come_from_the_format_registry():
    assert peers.weight_schema_fields(NVFP4) == {"b_dtype": "float4e2m1", "bs_dtype": "float8e4m3",
                                                 "weight_scale_group_size": 16, "weight_scale_2_type": "tensor"}
    assert peers.weight_schema_fields(MXFP4) == {"b_dtype": "float4e2m1", "bs_dtype": "float8e8m0",
                                                 "weight_scale_group_size": 32}
    assert peers.input_schema_fields(BF16) is None
    assert peers.input_schema_fields(MXFP8) == {"a_dtype": "float8e4m3", "input_scale_group_size": 32}


def decode_humming_weight(tensors: dict, block: int) -> torch.Tensor:
    """float32 [N, K] from humming's unrepacked weight format, decoded by its documented layout: element k of a
    row is the 4 bits at 4(k % 8) of int32 word k // 8 (sign, 2 exponent bits, 1 mantissa bit)."""
    words = tensors["weight"]
    codes = torch.stack([(words >> (4 * j)) & 0xF for j in range(8)], dim=-1).reshape(words.shape[0], -1)
    magnitudes = torch.tensor(E2M1_MAGNITUDES)[codes & 0x7]
    values = torch.where(codes & 0x8 != 0, -magnitudes, magnitudes)
    scales = tensors["weight_scale"].float().repeat_interleave(block, dim=1)
    tensor_scale = tensors["weight_scale_2"].float() if "weight_scale_2" in tensors else 1.0
    return values * scales * tensor_scale


@pytest.mark.parametrize("fmt_name", ["w4a16-nvfp4", "w4a16-mxfp4", "w4a8"])
def test_weight_conversion_decodes_to_the_original_weights(fmt_name):
    fmt = GEMM_FORMATS[fmt_name]
    p = generate(Shape(8, 96, 512, 2, seed=fresh_seed()), fmt)
    for i in range(2):
        tensors = peers.humming_weight_tensors(p.b, p.sfb, fmt.b, i)
        assert tensors["weight"].dtype == torch.int32 and tensors["weight"].shape == (96, 512 // 8)
        assert tensors["weight_scale"].dtype == fmt.b.scale.dtype
        assert tensors["weight"].data_ptr() == p.b[:, :, i].data_ptr()   # a view of the batch, no copy
        assert ("weight_scale_2" in tensors) == (fmt.b is NVFP4)
        assert torch.equal(decode_humming_weight(tensors, fmt.b.block_size), dequantize_operands(p.data, fmt, i)[1])


def test_w4a8_input_scales_give_back_the_activations():
    fmt = GEMM_FORMATS["w4a8"]
    p = generate(Shape(24, 64, 256, 2, seed=fresh_seed()), fmt)
    assert peers.humming_input_scales(None, BF16, 0, p.device) is None
    for i in range(2):
        scales = peers.humming_input_scales(p.sfa, fmt.a, i, p.device)
        assert scales.dtype == torch.float32 and scales.shape == (24, 256 // 32) and scales.is_contiguous()
        values = p.a[:, :, i].float() * scales.repeat_interleave(32, dim=1)
        assert torch.equal(values, dequantize_operands(p.data, fmt, i)[0])


@pytest.mark.parametrize("fmt_name", ["w4a16-nvfp4", "w4a16-mxfp4", "w4a8"])
def test_humming_accepts_the_converted_tensors(fmt_name):
    pytest.importorskip("humming", reason="humming-kernels is not installed")
    from humming.schema import HummingInputSchema, HummingWeightSchema

    fmt = GEMM_FORMATS[fmt_name]
    p = generate(Shape(8, 128, 256, seed=fresh_seed()), fmt)
    schema = HummingWeightSchema(**peers.weight_schema_fields(fmt.b))
    schema.validate_tensors(peers.humming_weight_tensors(p.b, p.sfb, fmt.b, 0), shape_n=128, shape_k=256,
                            param_dtype=torch.bfloat16)
    inputs = peers.input_schema_fields(fmt.a)
    if inputs is not None:
        assert HummingInputSchema(**inputs).get_activation_bits() == 8


def test_importing_the_peers_does_not_import_humming():
    code = "import sys, fp4bench.kernels.peers; print('humming' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["False"], out.stderr[-2000:]


def test_stream_k_factor():
    assert peers.stream_k_factor(1, BF16_UNIT) == BF16_UNIT   # one slice: the output's own rounding
    assert peers.stream_k_factor(10, BF16_UNIT) == pytest.approx(55 / (1 - 9 * BF16_UNIT) * BF16_UNIT)


def test_stream_k_allowance_is_the_range_of_the_tile_prefix_sums():
    m, n, k, tile = 3, 5, 96, 16
    da, db = torch.randn(m, k), torch.randn(n, k)
    allowance = peers.stream_k_allowance(da, db, tile, torch.bfloat16)
    for i in range(m):
        for j in range(n):
            prefix = [0.0]
            for t in range(k // tile):
                prefix.append(prefix[-1] + float((da[i, t * tile:(t + 1) * tile].double()
                                                  * db[j, t * tile:(t + 1) * tile].double()).sum()))
            expected = peers.stream_k_factor(peers.STREAM_K_MAX_SLICES, BF16_UNIT) * (max(prefix) - min(prefix))
            assert float(allowance[i, j]) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="not a multiple of the K tile"):
        peers.stream_k_allowance(da, db, 40, torch.bfloat16)


def bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).double()


def test_stream_k_allowance_bounds_a_bf16_stream_k_reduction():
    # The reduction it bounds: a tile's K range cut at tile boundaries into up to 10 slices, each slice's
    # partial rounded to bf16, slice 0 stored first, the others added in bf16 in a random order. Data with
    # large partials that cancel, where the bound matters.
    m, n, k, tile = 16, 24, 2048, 64
    tiles = k // tile
    da = torch.randn(m, k) * torch.exp2(torch.randint(-4, 5, (m, 1)).float())
    db = torch.randn(n, k) + 0.5
    exact = da.double() @ db.double().T
    allowance = peers.stream_k_allowance(da, db, tile, torch.bfloat16).double()
    partial_tiles = torch.einsum("mtk,ntk->tmn", da.double().reshape(m, tiles, tile), db.double().reshape(n, tiles, tile))
    worst = 0.0
    for _ in range(40):
        slices = int(torch.randint(1, peers.STREAM_K_MAX_SLICES + 1, ()))
        cuts = sorted(torch.randperm(tiles - 1)[:slices - 1].add(1).tolist())
        bounds = [0, *cuts, tiles]
        partials = [bf16(partial_tiles[s:e].sum(0)) for s, e in zip(bounds, bounds[1:])]
        total = partials[0]
        for j in torch.randperm(slices - 1).add(1).tolist():
            total = bf16(total + partials[j])
        error = (total - exact).abs()
        assert bool((error <= allowance).all()), float((error - allowance).max())
        worst = max(worst, float((error / allowance).max()))
    assert worst > 0.005   # the roundings do show, so the test compares something
    # A reduction that loses one slice is far outside the bound: the check can fail.
    dropped = bf16(partial_tiles[:tiles // 2].sum(0))
    assert bool(((dropped - exact).abs() > allowance).float().mean() > 0.5)


# --- on a GPU: the baselines against the exact reference (fp4bench's own check: NaN-poisoned, guarded output,
# two seeds, the run-to-run rerun) on shapes with and without humming's stream-K.
# Few shapes: humming compiles (NVRTC) one kernel per shape and format at its first call.
GPU_SHAPES = [(128, 512, 2048, 1), (1, 256, 1024, 1), (77, 256, 512, 2), (200, 128, 64, 1), (16, 7168, 16384, 1)]


@pytest.mark.gpu
@pytest.mark.parametrize("name,fmt_name", [(n, f) for n, fs in FORMATS.items() for f in fs])
def test_humming_matches_the_reference_on_the_gpu(name, fmt_name):
    kernel, target = get_kernel(name), current_target("cuda")
    reason = kernel.unavailable_reason(target)
    if reason:
        pytest.skip(reason)
    fmt, plans = GEMM_FORMATS[fmt_name], []
    for m, n, k, l in GPU_SHAPES:
        shape = Shape(m, n, k, l, seed=fresh_seed())
        if k % (2 * peers.MMA_DEPTH_BITS // fmt.a.element.bits):
            continue
        outcome = check_case(kernel, shape, fmt, target, shape.seeds(2))
        plan = peers.humming_plan(outcome.problem) if outcome.problem is not None else None
        assert outcome.status == "pass", (str(shape), outcome.reason, plan and plan.tuning)
        assert outcome.check.max_abs_err == outcome.check.max_abs_err   # a real comparison (not NaN)
        plans.append((str(shape), plan.stream_k, plan.k_tile))
    print(name, fmt_name, "(shape, stream-K, K tile):", plans)
