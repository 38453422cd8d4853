"""Competition-compatible inputs and the exact reference."""

from __future__ import annotations

import pytest
import torch

from fp4bench import codecs, layouts
from fp4bench.formats import GEMM_FORMATS, gemm_format
from fp4bench.problem import Shape, generate, min_bytes, poison_output, validate_shape
from fp4bench.reference import reference_gemm, reference_output


def test_nvfp4_problem_matches_competition_tuple():
    s = Shape(128, 256, 512, 2, seed=3)
    p = generate(s, gemm_format("nvfp4"))
    a, b, sfa, sfb, sfa_p, sfb_p, c = p.data
    assert a.shape == (128, 256, 2) and a.dtype == torch.float4_e2m1fn_x2
    assert b.shape == (256, 256, 2) and b.dtype == torch.float4_e2m1fn_x2
    # K-major views of contiguous (L, MN, K/2) tensors, as the competition builds them.
    assert a.permute(2, 0, 1).is_contiguous() and b.permute(2, 0, 1).is_contiguous()
    assert sfa.shape == (128, 32, 2) and sfa.dtype == torch.float8_e4m3fn
    assert sfb.shape == (256, 32, 2)
    assert sfa_p.shape == (32, 4, 1, 4, 8, 2) and sfb_p.shape == (32, 4, 2, 4, 8, 2)
    assert c.shape == (128, 256, 2) and c.dtype == torch.float16 and c.permute(2, 0, 1).is_contiguous()
    # Scales take integer values 0..3 and zero scales occur.
    vals = set(sfa.float().unique().tolist()) | set(sfb.float().unique().tolist())
    assert vals == {0.0, 1.0, 2.0, 3.0}
    # Element bytes cover (nearly) all 256 patterns.
    assert codecs.as_bytes(a).unique().numel() > 250
    assert torch.equal(layouts.from_competition(sfa_p, 128, 32).view(torch.uint8), sfa.view(torch.uint8))


def test_same_seed_same_data_and_different_seed_differs():
    f = gemm_format("mxfp4")
    p1, p2 = generate(Shape(64, 64, 128, seed=5), f), generate(Shape(64, 64, 128, seed=5), f)
    p3 = generate(Shape(64, 64, 128, seed=6), f)
    for x, y in zip(p1.data, p2.data):
        assert torch.equal(x.view(torch.uint8) if x.element_size() == 1 else x, y.view(torch.uint8) if y.element_size() == 1 else y)
    assert not torch.equal(codecs.as_bytes(p1.a), codecs.as_bytes(p3.a))


@pytest.mark.parametrize("name", list(GEMM_FORMATS))
def test_every_format_generates_with_its_dtypes(name):
    f = gemm_format(name)
    p = generate(Shape(40, 72, 4 * f.k_multiple), f)
    assert p.a.dtype == f.a.element.storage_dtype and p.b.dtype == f.b.element.storage_dtype
    assert p.c.dtype == f.out_dtype
    if f.a.block_scaled:
        assert p.sfa.dtype == f.a.scale.dtype and p.data[4] is not None
    else:
        assert p.sfa is None and p.data[4] is None
    if name == "w4a8":
        # e4m3 NaN bytes are never drawn
        assert ((codecs.as_bytes(p.a) & 0x7F) != 0x7F).all()


def float64_gemm(p, batch):
    """Independent float64 computation: decode every element and scale by hand, no shared helpers."""
    def operand(x, sf, fmt):
        if fmt.element.name == "e2m1":
            bytes_ = codecs.as_bytes(x).long()
            codes = torch.stack([bytes_ & 0xF, bytes_ >> 4], -1).flatten(-2)
            sign = torch.where(codes & 8 > 0, -1.0, 1.0).double()
            e, m = (codes >> 1) & 3, codes & 1
            mag = torch.where(e == 0, m.double() * 0.5, (1 + m.double() / 2) * torch.pow(2.0, (e - 1).double()))
            v = sign * mag
        elif fmt.element.name == "e4m3":
            v = x.view(torch.float8_e4m3fn).double()
        else:
            v = x.double()
        if sf is None:
            return v
        if fmt.scale.power_of_two:
            scale = torch.pow(2.0, codecs.as_bytes(sf).double() - 127)
        else:
            scale = sf.double()
        return v * scale.repeat_interleave(fmt.block_size, dim=1)
    a = operand(p.a[:, :, batch], None if p.sfa is None else p.sfa[:, :, batch], p.fmt.a)
    b = operand(p.b[:, :, batch], None if p.sfb is None else p.sfb[:, :, batch], p.fmt.b)
    return a @ b.T


def reference_gemm_abs(p, batch):
    from fp4bench.reference import dequantize_operands

    da, db = dequantize_operands(p.data, p.fmt, batch)
    return da.double().abs() @ db.double().abs().T


@pytest.mark.parametrize("name", list(GEMM_FORMATS))
def test_reference_matches_float64(name, random_seed):
    f = gemm_format(name)
    p = generate(Shape(67, 45, 8 * f.k_multiple, 2, seed=random_seed), f)
    ref64 = reference_gemm(p, torch.float64)
    ref32 = reference_gemm(p)
    k = p.shape.k
    for i in range(2):
        expected = float64_gemm(p, i)
        assert torch.equal(ref64[:, :, i], expected)
        # float32 accumulation: error within the standard bound K * eps32 * sum |a_k b_k|.
        a_abs = reference_gemm_abs(p, i)
        assert ((ref32[:, :, i].double() - expected).abs() <= k * 2.0 ** -24 * a_abs).all()
    assert reference_output(p).dtype == f.out_dtype
    assert ref64.abs().max() > 0


def test_poison_fills_nan_with_the_competition_layout():
    p = poison_output(generate(Shape(16, 24, 64, 2), gemm_format("nvfp4")))
    assert torch.isnan(p.c).all() and p.c.shape == (16, 24, 2) and p.c.permute(2, 0, 1).is_contiguous()


@pytest.mark.parametrize("shape,fragment", [
    (Shape(16, 16, 24), "multiple of 16"),
    (Shape(0, 16, 32), "positive"),
    (Shape(16, -1, 32), "positive"),
])
def test_validate_shape(shape, fragment):
    assert fragment in validate_shape(shape, gemm_format("nvfp4"))
    with pytest.raises(ValueError):
        generate(shape, gemm_format("nvfp4"))


def test_validate_shape_uses_the_largest_block():
    assert validate_shape(Shape(16, 16, 48), gemm_format("w4a8")) is not None
    assert validate_shape(Shape(16, 16, 48), gemm_format("nvfp4")) is None


def test_min_bytes_counts_operands_scales_and_output():
    expected = 128 * 256 + 256 * 256 + (128 + 256) * 32 + 128 * 256 * 2
    assert min_bytes(Shape(128, 256, 512), gemm_format("nvfp4")) == expected


def _fp4_tensor_core_reason():
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    from fp4bench.arch import current_target

    t = current_target("cuda")
    if not t.has_fp4_tensor_cores:
        return f"torch._scaled_mm FP4 needs sm_100/sm_120; this GPU is {t.arch.rstrip('a')}"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_fp4_tensor_core_reason() is not None, reason=str(_fp4_tensor_core_reason()))
def test_reference_matches_torch_scaled_mm_on_fp4_tensor_cores():
    p = generate(Shape(256, 384, 1024, 2), gemm_format("nvfp4"), "cuda")
    ref = reference_output(p)
    for i in range(p.shape.l):
        out = torch._scaled_mm(p.a[:, :, i], p.b[:, :, i].transpose(0, 1),
                               layouts.to_blocked(p.sfa[:, :, i]), layouts.to_blocked(p.sfb[:, :, i]),
                               bias=None, out_dtype=torch.float16)
        assert torch.allclose(out.float(), ref[:, :, i].float(), rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
def test_gpu_generation_and_reference_agree_with_cpu_reference():
    p = generate(Shape(96, 160, 512, 2), gemm_format("mxfp4"), "cuda")
    assert p.a.is_cuda and p.data[4].is_cuda
    gpu = reference_gemm(p, torch.float64).cpu()
    cpu_problem = type(p)(p.shape, p.fmt, tuple(x.cpu() for x in p.data), torch.device("cpu"))
    assert torch.equal(gpu, reference_gemm(cpu_problem, torch.float64))
