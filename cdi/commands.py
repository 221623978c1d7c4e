"""`gpu-cdi validate` and `gpu-cdi list`: the CDI core's subcommands.

Nothing heavy is imported at module level: the parser is built on every `gpu-cdi` start.
"""

from __future__ import annotations

import argparse
import os
import sys


def validate_arguments(validate: argparse.ArgumentParser) -> None:
    """The arguments of `gpu-cdi validate`."""
    validate.description = (
        "Check CDI spec files. Prints one line per file; exit 1 if any is invalid."
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="spec file (.yaml or .json)")
    validate.set_defaults(func=run_validate)


def list_arguments(listing: argparse.ArgumentParser) -> None:
    """The arguments of `gpu-cdi list`."""
    listing.description = (
        "List qualified device names with the file that defines each, then the errors of "
        "the spec dirs (on stderr; exit 1 if there are any)."
    )
    listing.add_argument(
        "--spec-dir",
        action="append",
        dest="spec_dirs",
        metavar="DIR",
        help="spec dir, lowest priority first (repeatable; default /etc/cdi /var/run/cdi)",
    )
    listing.set_defaults(func=run_list)


def run_validate(args: argparse.Namespace) -> int:
    """Validate each file; one line per file."""
    from cdi.codec import load_spec
    from cdi.errors import SpecError
    from cdi.spec import SPEC_FORMATS
    from cdi.version import minimum_version

    failed = 0
    for path in args.files:
        try:
            if os.path.splitext(path)[1] not in SPEC_FORMATS:
                raise SpecError(
                    path, "CDI registries read only .yaml and .json files: this one is ignored"
                )
            spec = load_spec(path)
        except SpecError as error:
            failed += 1
            print(f"INVALID {error}")
            continue
        print(
            f"OK {path}: {len(spec.devices)} devices of {spec.kind}, cdiVersion "
            f"{spec.version} (minimum {minimum_version(spec)})"
        )
    return 1 if failed else 0


def run_list(args: argparse.Namespace) -> int:
    """Print the registry's devices and errors."""
    from cdi.registry import DEFAULT_SPEC_DIRS, Registry

    spec_dirs = args.spec_dirs or DEFAULT_SPEC_DIRS
    snapshot = Registry(spec_dirs).snapshot
    for name in sorted(snapshot.devices):
        print(f"{name}\t{snapshot.devices[name].path}")
    for directory in spec_dirs:
        if not os.path.lexists(directory):
            print(f"note: {directory}: no such spec dir (nothing read from it)", file=sys.stderr)
    # A conflict is told to both of its files: say each message once.
    messages = dict.fromkeys(m for file_messages in snapshot.errors.values() for m in file_messages)
    for message in messages:
        print(f"error: {message}", file=sys.stderr)
    return 1 if snapshot.errors else 0
