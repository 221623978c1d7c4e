"""The installed version of gpu-cdi (`--version` of every program), from the package metadata.

Read only when asked: importing importlib.metadata costs more than a whole `gpu-cdi` parse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

DISTRIBUTION = "gpu-cdi"


def version() -> str:
    """The version pip recorded for the gpu-cdi distribution this code belongs to."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed: pip install .)"


class VersionAction(argparse.Action):
    """`--version`: print `PROG VERSION` and exit, reading the metadata only then."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the version and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        sys.stdout.write(f"{parser.prog} {version()}\n")
        parser.exit()
