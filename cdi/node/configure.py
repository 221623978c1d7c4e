"""`gpu-cdi configure containerd|docker`: the job of `nvidia-ctk runtime configure`, for CDI and
NRI instead of a wrapper runtime. Flag names are nvidia-ctk's where the meaning is the same.

Nothing heavy is imported here: the parser is built on every `gpu-cdi` start.
"""

from __future__ import annotations

import argparse
import sys

from cdi.node import containerd, docker

CDI_FLAGS = ("--cdi.enabled", "--cdi.enable", "--enable-cdi")  # nvidia-ctk's spellings
RUNTIMES = {
    # name: (the runtime's module, help)
    "containerd": (
        containerd,
        "turn NRI on (gpu-cdi-nri attaches to it), and with --cdi.enabled containerd's CDI, in "
        "config.toml (config version 2: containerd 1.7; 3: containerd 2.x)",
    ),
    "docker": (
        docker,
        "turn CDI on in daemon.json (docker run --device nvidia.com/gpu=all; Docker >= 25)",
    ),
}


def configure_arguments(configure: argparse.ArgumentParser) -> None:
    """Set up the `gpu-cdi configure` subparser and its `containerd` and `docker` commands."""
    configure.description = (
        "Edit a container runtime's config so that CDI devices reach containers. "
        "The file keeps its comments and order; the old one is kept as FILE.bak-TIME."
    )
    runtimes = configure.add_subparsers(dest="runtime", required=True, metavar="RUNTIME")
    for name, (module, summary) in RUNTIMES.items():
        default = module.DEFAULT_CONFIG
        p = runtimes.add_parser(name, help=summary, description=summary[0].upper() + summary[1:])
        p.add_argument(
            "--config", default=default, metavar="FILE", help=f"config file (default {default})"
        )
        p.add_argument(
            "--dry-run", action="store_true", help="print the diff on stdout, write nothing"
        )
        p.add_argument(
            *CDI_FLAGS,
            dest="cdi",
            action="store_true",
            help="enable CDI in the runtime" + (" (always done for docker)" * (name == "docker")),
        )
        p.add_argument(
            "--cdi.spec-dir",
            dest="spec_dirs",
            action="append",
            default=[],
            metavar="DIR",
            help="a CDI spec dir the runtime must read, e.g. gpu-cdi-nri's (repeatable; "
            "implies --cdi.enabled; default: the runtime's own /etc/cdi and /var/run/cdi)",
        )
        p.set_defaults(func=configure_command)


def configure_command(args: argparse.Namespace) -> int:
    """Run `gpu-cdi configure RUNTIME`."""
    from cdi.node import configfile

    for directory in args.spec_dirs:
        if not directory.startswith("/"):
            return _fail(args.runtime, f"--cdi.spec-dir {directory!r}: must be an absolute path")
    try:
        old = configfile.read(args.config)
        if args.runtime == "containerd":
            edit = containerd.configure(old, args.config, args.cdi, args.spec_dirs)
        else:
            edit = docker.configure(old, args.config, args.spec_dirs)
        restart = RUNTIMES[args.runtime][0].RESTART
        return configfile.apply(
            args.config, old, edit, args.dry_run, restart, sys.stdout, sys.stderr
        )
    except configfile.ConfigError as error:
        return _fail(args.runtime, str(error))


def _fail(runtime: str, message: str) -> int:
    print(f"gpu-cdi configure {runtime}: error: {message}", file=sys.stderr)
    return 2
