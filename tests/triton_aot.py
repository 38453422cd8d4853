"""Test helper: compile a Triton kernel ahead of time for a GPU this machine does not have, and disassemble it.

Triton compiles for any NVIDIA target without a device (`triton.compile` with a `GPUTarget`); its bundled
ptxas and nvdisasm turn the result into SASS. The launch specializes what a real launch would: strides equal
to 1 become constants and pointers and the named integers are marked divisible by 16, as Triton's JIT does for
the competition's tensors. Imported by tests (no test of its own).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource


def compile_for(kernel, capability: int, types: dict[str, str], constexprs: dict, divisible: tuple[str, ...],
                num_warps: int, num_stages: int):
    """`kernel` compiled for sm_<capability>: `types` every runtime argument's Triton type ("*fp8e4nv", "i32"),
    `constexprs` the constants (a stride of 1 included), `divisible` the arguments known divisible by 16."""
    names = kernel.arg_names
    signature = {n: "constexpr" if n in constexprs else types[n] for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in divisible}
    source = ASTSource(fn=kernel, signature=signature, constexprs=dict(constexprs), attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", capability, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages})


def nvdisasm_path() -> str | None:
    from triton.backends import nvidia

    bundled = os.path.join(os.path.dirname(nvidia.__file__), "bin", "nvdisasm")
    return bundled if os.path.exists(bundled) else shutil.which("nvdisasm")


def sass(compiled) -> str:
    """The SASS text of a compiled kernel's cubin."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        return subprocess.run([nvdisasm_path(), "-c", f.name], check=True, capture_output=True, text=True).stdout
