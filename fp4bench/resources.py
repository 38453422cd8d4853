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


def bundled_shape_sets() -> list[str]:
    """Names of the shape sets shipped with fp4bench ('task', 'verify', ...)."""
    return sorted(f.stem for f in shapes_dir().glob("*.yml"))


def resolve_shapes_path(path: str) -> Path:
    """A shape file path as given, else the bundled set of that name: 'shapes/task.yml', 'task.yml' and 'task'
    all work from any directory."""
    p = Path(path)
    if p.exists():
        return p
    if p.parent.name in ("", "shapes"):
        for name in (p.name, f"{p.name}.yml"):
            bundled = shapes_dir() / name
            if bundled.exists():
                return bundled
    return p
