"""Architecture facts and dispatch: which compute capability is which compile target.

Every kernel names the targets it runs on (for example "sm_90a"); the device in hand names its own
through `ARCH_BY_CAPABILITY`. A kernel whose targets exclude the device's is skipped with a reason,
never attempted. Build caches key on the target string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

import torch

# The 'a' targets carry the architecture-specific instructions (wgmma, tcgen05, block-scaled mma).
ARCH_BY_CAPABILITY = MappingProxyType({
    (8, 0): "sm_80",
    (8, 6): "sm_86",
    (8, 9): "sm_89",
    (9, 0): "sm_90a",
    (10, 0): "sm_100a",
    (10, 3): "sm_103a",
    (12, 0): "sm_120a",
    (12, 1): "sm_121a",
})
FP4_TENSOR_CORE_ARCHS = frozenset({"sm_100a", "sm_103a", "sm_120a", "sm_121a"})
FP8_TENSOR_CORE_ARCHS = frozenset({"sm_89", "sm_90a"}) | FP4_TENSOR_CORE_ARCHS


@dataclass(frozen=True)
class Target:
    """Where kernels run: the CPU, or one CUDA device."""

    device: str                       # "cpu" or "cuda"
    index: int = 0
    capability: tuple[int, int] | None = None
    name: str = "cpu"

    @property
    def arch(self) -> str:
        if self.capability is None:
            return "cpu"
        return ARCH_BY_CAPABILITY.get(self.capability, "sm_%d%d" % self.capability)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device, self.index) if self.device == "cuda" else torch.device("cpu")

    @property
    def has_fp4_tensor_cores(self) -> bool:
        return self.arch in FP4_TENSOR_CORE_ARCHS

    def describe(self) -> str:
        return "CPU" if self.device == "cpu" else f"{self.name} ({self.arch})"


CPU = Target("cpu")


def gpu_slug(name: str | None) -> str:
    """A GPU model as a file-name stem: 'NVIDIA H200' -> 'nvidia-h200'; None or empty -> 'cpu'."""
    slug = re.sub(r"[^a-z0-9]+", "-", (name or "cpu").lower()).strip("-")
    return slug or "cpu"


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (1 for the CPU: one "processor" to spread work over)."""
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def cuda_available() -> bool:
    return torch.cuda.is_available()


def current_target(device: str = "auto", index: int = 0) -> Target:
    """The target for a --device choice: 'cpu', 'cuda' or 'auto' (cuda when present)."""
    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    if device == "cpu":
        return CPU
    if device != "cuda":
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or auto")
    if not cuda_available():
        raise RuntimeError("no CUDA device is available (torch.cuda.is_available() is False)")
    if index >= torch.cuda.device_count():
        raise RuntimeError(f"GPU {index} does not exist; this machine has {torch.cuda.device_count()}")
    return Target("cuda", index, torch.cuda.get_device_capability(index), torch.cuda.get_device_name(index))
