"""Shape-set files (YAML).

A file is either a list of shapes or a mapping of group names to lists (the competition's `tests` and
`benchmarks`); the competition's own task.yml is read as it is (only its tests and benchmarks lists). Each shape is a mapping with integer keys m, n, k and optional l (default 1) and seed
(default 1111). Any error is a `ShapeFileError` with a one-line message naming the file and entry.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .problem import Shape
from .resources import bundled_shape_sets, resolve_shapes_path

REQUIRED = ("m", "n", "k")
# The groups of the competition's task.yml files (which also hold lists of files, templates...).
COMPETITION_GROUPS = {"tests", "benchmarks"}
OPTIONAL = {"l": 1, "seed": 1111}


class ShapeFileError(ValueError):
    pass


def _parse_entry(entry, where: str) -> Shape:
    if not isinstance(entry, dict):
        raise ShapeFileError(f"{where}: expected a mapping with keys m, n, k, got {entry!r}")
    missing = [key for key in REQUIRED if key not in entry]
    if missing:
        raise ShapeFileError(f"{where}: missing key {', '.join(missing)}")
    unknown = set(entry) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        raise ShapeFileError(f"{where}: unknown key {', '.join(sorted(map(str, unknown)))}")
    values = {}
    for key in (*REQUIRED, *OPTIONAL):
        v = entry.get(key, OPTIONAL.get(key))
        if not isinstance(v, int) or isinstance(v, bool):
            raise ShapeFileError(f"{where}: {key} must be an integer, got {v!r}")
        if key != "seed" and v <= 0:
            raise ShapeFileError(f"{where}: {key} must be positive, got {v}")
        values[key] = v
    return Shape(**values)


def _holds_shapes(entries: list) -> bool:
    return any(isinstance(e, dict) and set(e) & set(REQUIRED) for e in entries)


def load_shapes(path: str | Path, groups: tuple[str, ...] | None = None) -> list[Shape]:
    """Shapes of a file, in file order, duplicates dropped; `groups` selects mapping keys."""
    p = resolve_shapes_path(str(path))
    try:
        text = p.read_text()
    except OSError as e:
        raise ShapeFileError(f"cannot read shape file {path}: {e.strerror or e} (bundled sets: "
                             f"{', '.join(bundled_shape_sets())})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ShapeFileError(f"{path}: malformed YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if doc is None:
        raise ShapeFileError(f"{path}: the file holds no shapes")
    if isinstance(doc, list):
        sections = {"shapes": doc}
    elif isinstance(doc, dict):
        sections = {str(k): v for k, v in doc.items() if isinstance(v, list)}
        if COMPETITION_GROUPS & set(sections):
            # The competition's task.yml holds lists of other things (files, templates) beside its cases:
            # those are left out; a group whose entries look like shapes is kept (and checked).
            sections = {k: v for k, v in sections.items() if k in COMPETITION_GROUPS or _holds_shapes(v)}
        if not sections:
            raise ShapeFileError(f"{path}: expected a list of shapes or groups of lists")
    else:
        raise ShapeFileError(f"{path}: expected a list of shapes or groups of lists, got {type(doc).__name__}")
    if groups:
        unknown = [g for g in groups if g not in sections]
        if unknown:
            raise ShapeFileError(f"{path}: no group {', '.join(unknown)} (has {', '.join(sections)})")
        sections = {g: sections[g] for g in groups}
    shapes: list[Shape] = []
    for group, entries in sections.items():
        for i, entry in enumerate(entries):
            shape = _parse_entry(entry, f"{path}: {group}[{i}]")
            if shape not in shapes:
                shapes.append(shape)
    if not shapes:
        raise ShapeFileError(f"{path}: the file holds no shapes")
    return shapes
