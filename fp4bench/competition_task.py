"""The `task` modules that competition submissions import (`from task import input_t, output_t`).

Each of the competition's NVFP4 problems ships a task.py describing its interface: the input structure
(`input_t`), the output (`output_t`) and the keys of one test case (`TestSpec`). fp4bench carries them as one
table (`INTERFACES`, by competition problem name) and builds the module a submission of a problem imports
(`task_module`), so a submission runs as downloaded; fp4bench.kernels.external installs it as `task` while the
submission loads, unless a task.py sits beside the submission (that one wins). The grouped problem's
`TestSpec` lists its task.yml keys (m, n, k per group, g, seed).
"""

from __future__ import annotations

import types
from typing import TypedDict, TypeVar

import torch

Tensor = torch.Tensor


class GemmSpec(TypedDict):
    m: int
    n: int
    k: int
    l: int
    seed: int


class GemvSpec(TypedDict):
    m: int
    k: int
    l: int
    seed: int


class GroupGemmSpec(TypedDict):
    m: list[int]
    n: list[int]
    k: list[int]
    g: int
    seed: int


# problem -> (input_t's bound, output_t's bound, TestSpec)
INTERFACES = {
    # (a, b, sfa, sfb, sfa_permuted, sfb_permuted, c)
    "nvfp4_gemm": (tuple[(Tensor,) * 7], Tensor, GemmSpec),
    # the same 7-tuple; b and sfb padded to 128 rows, c [M, 1, L]
    "nvfp4_gemv": (tuple[(Tensor,) * 7], Tensor, GemvSpec),
    # (a, b1, b2, sfa, sfb1, sfb2, sfa_permuted, sfb1_permuted, sfb2_permuted, c)
    "nvfp4_dual_gemm": (tuple[(Tensor,) * 10], Tensor, GemmSpec),
    # ([(a, b, c)], [(sfa, sfb)], [(sfa_permuted, sfb_permuted)], [(m, n, k, l)]) -> [c]
    "nvfp4_group_gemm": (tuple[list[tuple[Tensor, Tensor, Tensor]], list[tuple[Tensor, Tensor]],
                               list[tuple[Tensor, Tensor]], list[tuple[int, int, int, int]]], list[Tensor],
                         GroupGemmSpec),
}


def task_module(problem: str) -> types.ModuleType:
    """A fresh module named `task` with the problem's input_t, output_t and TestSpec."""
    input_bound, output_bound, spec = INTERFACES[problem]
    module = types.ModuleType("task", f"The interface of the competition's {problem} problem (fp4bench).")
    module.input_t = TypeVar("input_t", bound=input_bound)
    module.output_t = TypeVar("output_t", bound=output_bound)
    module.TestSpec = spec
    return module
