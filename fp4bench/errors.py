"""Exit codes and the one exception type the CLI turns into a one-line error.

0  everything checked passed (or no regression)
1  a correctness check failed, a kernel crashed, or a regression was found
2  unusable input: bad arguments, malformed shape file, unknown kernel/format/GPU, missing GPU
3  nothing was checked: every selected case was skipped (a CI gate must not pass vacuously)
4  a submission file could not be imported on this machine for a reason of the environment (no CUDA
   toolchain, no GPU of the architecture it targets, a package it needs): its cases are skipped with the
   reason; a failing case still makes it 1
"""

from __future__ import annotations

import click

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_NOTHING_CHECKED = 3
EXIT_UNAVAILABLE = 4


class InputError(click.ClickException):
    """Bad input: printed as one line 'Error: ...', exit code 2."""

    exit_code = EXIT_INPUT
