"""The `task` module that competition submissions import (`from task import input_t, output_t`).

fp4bench puts this folder last on `sys.path` while it loads a submission file, so a submission runs as
downloaded; a `task.py` beside the submission still wins. It describes the NVFP4 GEMM problem's interface
(fp4bench.competition): the input tuple, the output tensor, and the keys of one test case.
"""

from typing import TypedDict, TypeVar

import torch

# (a, b, sfa, sfb, sfa_permuted, sfb_permuted, c)
input_t = TypeVar("input_t", bound=tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                         torch.Tensor, torch.Tensor])
output_t = TypeVar("output_t", bound=torch.Tensor)


class TestSpec(TypedDict):
    m: int
    n: int
    k: int
    l: int
    seed: int
