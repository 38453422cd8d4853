"""Where the shipped data lives: kernel sources (`kernels/`) and shape sets (`shapes/`).

In a source checkout they sit beside the package; an installed wheel carries them inside the package as
`fp4bench/_kernels` and `fp4bench/_shapes` (pyproject maps them there).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE / f"_{name}", _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"fp4bench's {name}/ directory is missing from this installation")


def kernel_source_dir() -> Path:
    return _find("kernels")


def shapes_dir() -> Path:
    return _find("shapes")


def resolve_shapes_path(path: str) -> Path:
    """A shape file path as given, else the bundled file of that name (so 'shapes/task.yml' works anywhere)."""
    p = Path(path)
    if p.exists():
        return p
    bundled = shapes_dir() / p.name
    if bundled.exists() and (p.parent.name in ("", "shapes")):
        return bundled
    return p
