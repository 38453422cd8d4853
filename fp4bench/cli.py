"""The `fp4bench` command line. Each subcommand lives in `fp4bench.commands.<name>` and is imported
only when used, so `fp4bench --help` stays fast and a missing optional dependency breaks one command, not all.
"""

from __future__ import annotations

import importlib

import click

from . import __version__

# name -> "module:attribute"
COMMANDS = {
    "verify": "fp4bench.commands.run:verify",
    "run": "fp4bench.commands.run:run",
    "device": "fp4bench.commands.device:device",
    "build": "fp4bench.commands.build:build",
    "cache": "fp4bench.commands.build:cache",
    "list": "fp4bench.commands.list:list_kernels",
    "compare": "fp4bench.commands.compare:compare",
    "report": "fp4bench.commands.report:report",
    "tune": "fp4bench.commands.run:tune",
    "merge": "fp4bench.commands.merge:merge",
    "plot": "fp4bench.commands.plot:plot",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        mod, attr = target.split(":")
        return getattr(importlib.import_module(mod), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fp4bench")
def main():
    """Benchmark and validate block-scaled FP4 GEMM kernels (NVFP4, MXFP4, W4A8, W4A16)."""


if __name__ == "__main__":
    main()
