"""Shape-set files (YAML).

A file is either a list of shapes or a mapping of group names to lists (the competition's `tests` and
`benchmarks`); the competition's own task.yml is read as it is (only its tests and benchmarks lists). The keys
of a shape depend on the problem kind (`load_shapes(..., kind=...)`), and are those of the competition's
task.yml of that problem, l and seed optional (defaults 1 and 1111):
  gemm, dual_gemm   m, n, k
  gemv              m, k (n may be given, and is 1)
  group_gemm        m, n, k: lists with one entry per group; g, when given, their length (L is 1)
Any error is a `ShapeFileError` with a one-line message naming the file and entry; an entry that is
another problem's case says which --problem reads it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .problem import GEMM, GEMV, GROUP_GEMM, KIND_SPECS, Shape
from .resources import bundled_shape_sets, resolve_shapes_path

# Keys each kind's entries must have; the optional ones are OPTIONAL (+ n for GEMV, g for group_gemm).
REQUIRED = {GEMV: ("m", "k"), GROUP_GEMM: ("m", "n", "k")}
DEFAULT_REQUIRED = ("m", "n", "k")
# The groups of the competition's task.yml files (which also hold lists of files, templates...).
COMPETITION_GROUPS = {"tests", "benchmarks"}
OPTIONAL = {"l": 1, "seed": 1111}
EXTRA_OPTIONAL = {GEMV: {"n": 1}, GROUP_GEMM: {"g": None}}


class ShapeFileError(ValueError):
    pass


def _integer(v, key: str, where: str, positive: bool = True) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ShapeFileError(f"{where}: {key} must be an integer, got {v!r}")
    if positive and v <= 0:
        raise ShapeFileError(f"{where}: {key} must be positive, got {v}")
    return v


def _other_problem_hint(entry: dict, kind: str) -> str:
    """' (a nvfp4_gemv case: use --problem nvfp4_gemv)' when the entry's keys are another kind's, else ''."""
    grouped = "g" in entry or any(isinstance(entry.get(key), list) for key in DEFAULT_REQUIRED)
    other = GROUP_GEMM if grouped else GEMV if "n" not in entry and {"m", "k"} <= set(entry) else None
    if other is None or other == kind:
        return ""
    name = KIND_SPECS[other].competition
    return f" (a {name} case: use --problem {name})"


def _parse_entry(entry, where: str, kind: str = GEMM) -> Shape:
    required = REQUIRED.get(kind, DEFAULT_REQUIRED)
    optional = {**OPTIONAL, **EXTRA_OPTIONAL.get(kind, {})}
    if not isinstance(entry, dict):
        raise ShapeFileError(f"{where}: expected a mapping with keys {', '.join(required)}, got {entry!r}")
    missing = [key for key in required if key not in entry]
    if missing:
        raise ShapeFileError(f"{where}: missing key {', '.join(missing)}{_other_problem_hint(entry, kind)}")
    unknown = set(entry) - set(required) - set(optional)
    if unknown:
        raise ShapeFileError(f"{where}: unknown key {', '.join(sorted(map(str, unknown)))}"
                             f"{_other_problem_hint(entry, kind)}")
    values = {key: _integer(entry.get(key, optional.get(key)), key, where, positive=key != "seed")
              for key in ("l", "seed")}
    if kind == GROUP_GEMM:
        sizes = {}
        for key in required:
            v = entry[key]
            if not isinstance(v, list) or not v:
                raise ShapeFileError(f"{where}: {key} must be a list of integers (one per group), got {v!r}")
            sizes[key] = tuple(_integer(x, f"{key}[{i}]", where) for i, x in enumerate(v))
        count = {len(v) for v in sizes.values()}
        g = entry.get("g")
        if len(count) > 1 or (g is not None and count != {g}):
            given = ", ".join(f"{len(v)} {key}" for key, v in sizes.items())
            raise ShapeFileError(f"{where}: m, n and k need one entry per group" +
                                 (f" (g = {g!r})" if g is not None else "") + f", got {given}")
        if values["l"] != 1:
            raise ShapeFileError(f"{where}: a grouped case has L = 1, got {values['l']}")
        return Shape(**sizes, **values)
    for key in ("m", "n", "k"):
        values[key] = _integer(entry.get(key, optional.get(key)), key, where)
    if kind == GEMV and values["n"] != 1:
        raise ShapeFileError(f"{where}: a GEMV case has n = 1, got {values['n']}")
    return Shape(**values)


def _holds_shapes(entries: list) -> bool:
    return any(isinstance(e, dict) and set(e) & {"m", "n", "k"} for e in entries)


def load_shapes(path: str | Path, groups: tuple[str, ...] | None = None, kind: str = GEMM) -> list[Shape]:
    """Shapes of a file for problems of `kind`, in file order, duplicates dropped; `groups` selects mapping
    keys."""
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
            shape = _parse_entry(entry, f"{path}: {group}[{i}]", kind)
            if shape not in shapes:
                shapes.append(shape)
    if not shapes:
        raise ShapeFileError(f"{path}: the file holds no shapes")
    return shapes
