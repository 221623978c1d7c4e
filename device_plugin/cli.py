"""`gpu-cdi-device-plugin`: flags, environment and config file -> the running plugin.

Exit codes: 0 stopped by a signal (or `--list` done), 1 the node cannot be served (no driver,
NVML failing, `single` on mixed MIG profiles) with --fail-on-init-error, 2 bad settings.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

PROG = "gpu-cdi-device-plugin"
DESCRIPTION = (
    "Kubernetes device plugin for NVIDIA GPUs and MIG devices: tells kubelet what the node has "
    "and hands out the CDI names of the spec gpu-cdi generate writes for it."
)


def setup_logging(level: str) -> None:
    """One line per event on stderr: time, level, message."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def parse_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Any:
    """The Settings `argv` (and `environ`) give; ConfigError, or SystemExit from argparse."""
    from device_plugin import config

    args = config.build_parser(PROG, DESCRIPTION).parse_args(argv)
    return config.load(args, environ or {})


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of `gpu-cdi-device-plugin`; returns the exit code."""
    from device_plugin import config

    environ = os.environ if environ is None else environ
    args = config.build_parser(PROG, DESCRIPTION).parse_args(argv)
    try:
        settings = config.load(args, environ)
        from device_plugin.daemon import Daemon, describe

        daemon = Daemon(settings, environ)
    except config.ConfigError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    if args.list:
        from device_plugin.node import discover_node, init_errors

        try:
            node = discover_node(settings)
        except init_errors() as error:
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return 1
        for note in node.notes:
            print(f"note: {note}", file=sys.stderr)
        sys.stdout.write(describe(node))
        return 0
    from device_plugin.daemon import one_malloc_arena

    one_malloc_arena()
    daemon.install_signals()
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
