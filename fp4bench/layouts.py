"""Scale-factor layouts and conversions between them.

Layouts of one [rows, cols] scale matrix (cols = K // block):
  * row-major       [rows, cols]: what a reference reads.
  * blocked 128x4   1-D, rows padded to 128 and cols to 4; 128x4 tiles ordered row-tile major, then
                    column tile; inside a tile the byte for (r, c) sits at (r % 32) * 16 + (r // 32) * 4 + c.
                    cuBLAS `_scaled_mm`, CUTLASS's Sm1xx block-scaled kernels and torchao's `to_blocked`
                    read these bytes.
  * competition     the same bytes per batch as a (32, 4, rest_m, 4, rest_k, L) view of a contiguous
                    (L, rest_m, rest_k, 32, 4, 4) tensor permuted (3, 4, 1, 5, 2, 0).
  * padded row-major [rows, round_up(cols, 16)]: some SM120 kernels read this.
Padding is zero-filled. Every conversion keeps the dtype, so they work on e4m3 and e8m0 alike.
"""

from __future__ import annotations

import torch

TILE_ROWS = 128
TILE_COLS = 4
TILE_BYTES = TILE_ROWS * TILE_COLS
PADDED_ROW_MAJOR_COLS = 16


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def round_up(a: int, b: int) -> int:
    return ceil_div(a, b) * b


def blocked_numel(rows: int, cols: int) -> int:
    return round_up(rows, TILE_ROWS) * round_up(cols, TILE_COLS)


def blocked_offset(r: int, c: int, rows: int, cols: int) -> int:
    """Byte offset of scale (r, c) in the blocked layout; the formula CUTLASS's layout reduces to."""
    n_col_tiles = ceil_div(cols, TILE_COLS)
    return ((r // TILE_ROWS) * n_col_tiles + c // TILE_COLS) * TILE_BYTES + (r % 32) * 16 + ((r // 32) % 4) * 4 + c % 4


def _pad2d(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    if x.shape == (rows, cols):
        return x
    out = torch.zeros((rows, cols), dtype=torch.uint8, device=x.device).view(x.dtype)
    out[: x.shape[0], : x.shape[1]] = x
    return out


def to_blocked(scales: torch.Tensor) -> torch.Tensor:
    """[rows, cols] row-major -> 1-D blocked layout (zero padding)."""
    rows, cols = scales.shape
    pr, pc = round_up(rows, TILE_ROWS), round_up(cols, TILE_COLS)
    padded = _pad2d(scales, pr, pc)
    # (row tile, 4 row groups of 32, 32 rows, col tile, 4 cols) -> (row tile, col tile, 32, 4 groups, 4 cols)
    t = padded.reshape(pr // TILE_ROWS, 4, 32, pc // TILE_COLS, TILE_COLS)
    return t.permute(0, 3, 2, 1, 4).contiguous().flatten()


def from_blocked(blocked: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """1-D blocked layout -> [rows, cols] row-major (padding dropped)."""
    pr, pc = round_up(rows, TILE_ROWS), round_up(cols, TILE_COLS)
    if blocked.numel() != pr * pc:
        raise ValueError(f"blocked scales hold {blocked.numel()} bytes; {rows}x{cols} needs {pr * pc}")
    t = blocked.reshape(pr // TILE_ROWS, pc // TILE_COLS, 32, 4, TILE_COLS)
    return t.permute(0, 3, 2, 1, 4).reshape(pr, pc)[:rows, :cols].contiguous()


def to_blocked_batched(scales: torch.Tensor) -> torch.Tensor:
    """[rows, cols, L] -> [L, blocked_numel] (one blocked matrix per batch)."""
    return torch.stack([to_blocked(scales[:, :, i]) for i in range(scales.shape[2])])


def to_competition(scales: torch.Tensor) -> torch.Tensor:
    """[rows, cols, L] -> the competition's (32, 4, rest_m, 4, rest_k, L) permuted view."""
    rows, cols, l = scales.shape
    rest_m, rest_k = ceil_div(rows, TILE_ROWS), ceil_div(cols, TILE_COLS)
    flat = to_blocked_batched(scales)
    return flat.reshape(l, rest_m, rest_k, 32, 4, 4).permute(3, 4, 1, 5, 2, 0)


def from_competition(permuted: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The competition's 6-D view -> [rows, cols, L] row-major."""
    if permuted.dim() != 6 or permuted.shape[:2] != (32, 4) or permuted.shape[3] != 4:
        raise ValueError(f"expected a (32, 4, rest_m, 4, rest_k, L) tensor, got {tuple(permuted.shape)}")
    l = permuted.shape[5]
    contiguous = permuted.permute(5, 2, 4, 0, 1, 3).reshape(l, -1)
    return torch.stack([from_blocked(contiguous[i], rows, cols) for i in range(l)], dim=-1)


def competition_blocked_bytes(permuted: torch.Tensor) -> torch.Tensor:
    """The blocked bytes behind a competition view, [L, rest_m * rest_k * 512], without a copy when possible.

    The view is built from a contiguous tensor, so permuting back recovers the original storage order.
    """
    l = permuted.shape[5]
    return permuted.permute(5, 2, 4, 0, 1, 3).reshape(l, -1)


def to_padded_row_major(scales: torch.Tensor, col_multiple: int = PADDED_ROW_MAJOR_COLS) -> torch.Tensor:
    rows, cols = scales.shape
    return _pad2d(scales, rows, round_up(cols, col_multiple))


def from_padded_row_major(padded: torch.Tensor, cols: int) -> torch.Tensor:
    return padded[:, :cols].contiguous()


def blocked_scale_address(permuted: torch.Tensor, rows: int, cols: int, l: int, what: str) -> int:
    """Address of the blocked bytes behind a competition scale view, for kernels that read that storage in
    place (L matrices of `blocked_numel(rows, cols)` bytes, one after the other); ValueError for any view that
    is not one."""
    rest_m, rest_k = ceil_div(rows, TILE_ROWS), ceil_div(cols, TILE_COLS)
    expected_shape = (32, 4, rest_m, 4, rest_k, l)
    if tuple(permuted.shape) != expected_shape:
        raise ValueError(f"{what} has shape {tuple(permuted.shape)}; the permuted view of {rows}x{cols}x{l} "
                         f"scales is {expected_shape}")
    blocked = competition_blocked_bytes(permuted)
    # The kernel reads the storage directly: it must be the untouched blocked layout, no copy.
    if not blocked.is_contiguous() or blocked.data_ptr() != permuted.data_ptr():
        raise ValueError(f"{what} is not a permuted view of contiguous blocked scales (strides {permuted.stride()})")
    if blocked.shape[1] != rest_m * rest_k * TILE_BYTES:
        raise ValueError(f"{what} holds {blocked.shape[1]} bytes per batch, expected {rest_m * rest_k * TILE_BYTES}")
    return permuted.data_ptr()
