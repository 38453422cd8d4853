"""Scale-factor layouts: round trips on odd sizes, and offsets against an independent formula."""

from __future__ import annotations

import pytest
import torch

from fp4bench import layouts


def random_scales(rows, cols, l=None, dtype=torch.float8_e4m3fn):
    shape = (rows, cols) if l is None else (rows, cols, l)
    # Non-zero bytes so that misplaced padding (zeros) cannot pass for data.
    return torch.randint(1, 255, shape, dtype=torch.int16).to(torch.uint8).view(dtype)


def independent_blocked_offset(r, c, rows, cols):
    """The cuBLAS/CUTLASS formula written from the spec: byte = l*(nR*nK*512) + (r/128)*nK*512 + (kb/4)*512
    + (r%32)*16 + ((r/32)%4)*4 + kb%4, with nK = ceil(cols/4)."""
    n_k = (cols + 3) // 4
    return (r // 128) * n_k * 512 + (c // 4) * 512 + (r % 32) * 16 + ((r // 32) % 4) * 4 + c % 4


SIZES = [(1, 1), (7, 3), (128, 4), (129, 5), (200, 66), (300, 33), (256, 8)]


@pytest.mark.parametrize("rows,cols", SIZES)
def test_blocked_roundtrip_and_offsets(rows, cols):
    s = random_scales(rows, cols)
    blocked = layouts.to_blocked(s)
    assert blocked.numel() == layouts.blocked_numel(rows, cols)
    assert blocked.numel() == ((rows + 127) // 128 * 128) * ((cols + 3) // 4 * 4)
    assert torch.equal(layouts.from_blocked(blocked, rows, cols).view(torch.uint8), s.view(torch.uint8))
    flat = blocked.view(torch.uint8)
    src = s.view(torch.uint8)
    written = torch.zeros(blocked.numel(), dtype=torch.bool)
    for r in range(rows):
        for c in range(cols):
            off = independent_blocked_offset(r, c, rows, cols)
            assert off == layouts.blocked_offset(r, c, rows, cols)
            assert flat[off] == src[r, c]
            written[off] = True
    # Everything that is not a scale is zero padding.
    assert (flat[~written] == 0).all()


@pytest.mark.parametrize("rows,cols,l", [(77, 6, 1), (129, 33, 3), (256, 8, 2)])
def test_competition_view_matches_blocked_bytes(rows, cols, l):
    s = random_scales(rows, cols, l, torch.float8_e8m0fnu)
    perm = layouts.to_competition(s)
    rest_m, rest_k = (rows + 127) // 128, (cols + 3) // 4
    assert perm.shape == (32, 4, rest_m, 4, rest_k, l)
    assert perm.dtype == s.dtype
    # Element (r%32, (r//32)%4, r//128, c%4, c//4, b) holds scale (r, c, b).
    pu, su = perm.view(torch.uint8), s.view(torch.uint8)
    for b in range(l):
        for r in range(0, rows, 5):
            for c in range(cols):
                assert pu[r % 32, (r // 32) % 4, r // 128, c % 4, c // 4, b] == su[r, c, b]
    blocked = layouts.competition_blocked_bytes(perm)
    for b in range(l):
        assert torch.equal(blocked[b], layouts.to_blocked(s[:, :, b]))
    assert torch.equal(layouts.from_competition(perm, rows, cols).view(torch.uint8), su)


def test_competition_view_is_a_permutation_of_contiguous_storage():
    s = random_scales(130, 9, 2)
    perm = layouts.to_competition(s)
    # The competition builds it as a permute of a contiguous (L, rest_m, rest_k, 32, 4, 4) tensor.
    base = perm.permute(5, 2, 4, 0, 1, 3)
    assert base.is_contiguous()


@pytest.mark.parametrize("rows,cols", [(5, 3), (64, 16), (33, 17)])
def test_padded_row_major_roundtrip(rows, cols):
    s = random_scales(rows, cols)
    p = layouts.to_padded_row_major(s)
    assert p.shape == (rows, (cols + 15) // 16 * 16)
    assert (p.view(torch.uint8)[:, cols:] == 0).all()
    assert torch.equal(layouts.from_padded_row_major(p, cols).view(torch.uint8), s.view(torch.uint8))


def test_from_blocked_rejects_wrong_size():
    with pytest.raises(ValueError):
        layouts.from_blocked(torch.zeros(100, dtype=torch.uint8), 128, 4)
