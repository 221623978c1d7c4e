"""`gpu-cdi`: the command line. Only parses flags; each subcommand lives with what it drives.

Subcommand modules must import nothing heavy at module level (pynvml, yaml, attrs): the
parser is built on every start, and start-up time is part of `gpu-cdi generate`'s budget.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The full `gpu-cdi` parser, with every subcommand registered."""
    from cdi import commands
    from cdi.node import configure, install
    from cdi.nvidia import commands as nvidia_commands
    from cdi.release import VersionAction

    parser = argparse.ArgumentParser(
        prog="gpu-cdi", description="Generate, inspect and validate CDI specs for NVIDIA GPUs."
    )
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    nvidia_commands.register(sub)
    commands.register(sub)
    install.register(sub)
    configure.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `gpu-cdi`; returns the exit code."""
    from cdi.errors import watch_output

    def run() -> int:
        args = build_parser().parse_args(argv)
        code: int = args.func(args)
        return code

    try:
        return watch_output("gpu-cdi", run, 2)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
