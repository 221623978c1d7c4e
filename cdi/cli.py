"""`gpu-cdi`: the command line. Only parses flags; each subcommand lives with what it drives.

A subcommand is one line of SUBCOMMANDS: its name, the function that adds its arguments (and
sets `func`, what runs it), and its one-line help. Only the subcommand being run is imported
and gets its arguments: start-up time is part of `gpu-cdi generate`'s budget, so subcommand
modules import nothing heavy at module level either.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

SUBCOMMANDS = (
    (
        "generate",
        "cdi.nvidia.commands:generate_arguments",
        "write a CDI spec for this host's NVIDIA GPUs (like nvidia-ctk cdi generate)",
    ),
    (
        "inventory",
        "cdi.nvidia.commands:inventory_arguments",
        "print what this host has (GPUs, MIG devices, driver files) as YAML",
    ),
    (
        "validate",
        "cdi.commands:validate_arguments",
        "check CDI spec files with the reference library's rules",
    ),
    ("list", "cdi.commands:list_arguments", "list the CDI devices of the spec dirs"),
    (
        "install-hook",
        "cdi.node.install:install_arguments",
        "install gpu-cdi-hook on the host as one file for its python3; print its path",
    ),
    (
        "configure",
        "cdi.node.configure:configure_arguments",
        "set a container runtime up for CDI devices (like nvidia-ctk runtime configure)",
    ),
)


def build_parser(argv: Sequence[str] | None = None) -> Any:
    """The `gpu-cdi` parser; with `argv` naming a subcommand, only that one is set up."""
    import argparse
    import importlib

    from cdi.release import VersionAction

    parser = argparse.ArgumentParser(
        prog="gpu-cdi", description="Generate, inspect and validate CDI specs for NVIDIA GPUs."
    )
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = [entry for entry in SUBCOMMANDS if argv and entry[0] == argv[0]]
    for name, where, help_text in chosen or SUBCOMMANDS:
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        if argv is None or chosen:
            module, function = where.split(":")
            getattr(importlib.import_module(module), function)(subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `gpu-cdi`; returns the exit code."""
    from cdi.errors import watch_output

    argv = sys.argv[1:] if argv is None else argv

    def run() -> int:
        args = build_parser(argv).parse_args(argv)
        code: int = args.func(args)
        return code

    try:
        return watch_output("gpu-cdi", run, 2)
    except KeyboardInterrupt:
        return 130


def console() -> NoReturn:
    """The `gpu-cdi` program: `main`, with the cyclic garbage collector off.

    A run keeps what it allocates until it exits, so collections would only rescan it (about
    a tenth of what `gpu-cdi generate` adds to its imports' floor).
    """
    gc.disable()
    sys.exit(main())


if __name__ == "__main__":
    console()
