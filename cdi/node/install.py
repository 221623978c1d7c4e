"""`gpu-cdi install-hook`: put the hook on the host as one file (cdi/node/hookfile.py) and print
the path to give `gpu-cdi generate --hook-path`.

The file is replaced atomically (a container starting meanwhile runs the old hook or the new
one, never half of one). The directory must exist: a typo in --prefix must not create a tree
that nothing else looks at. Messages go to stderr, the path alone to stdout, so that
`--hook-path "$(gpu-cdi install-hook)"` works.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys

from cdi.node.hookpath import HOOK_PROGRAM, is_executable, on_host

DEFAULT_PREFIX = "/usr/local/bin"
DEFAULT_PYTHON = "/usr/bin/python3"
HOOK_MODE = 0o755


class InstallError(Exception):
    """The hook cannot be installed as asked; the message is one line."""


def install_arguments(p: argparse.ArgumentParser) -> None:
    """Set up the `gpu-cdi install-hook` subparser."""
    p.description = (
        "Write gpu-cdi-hook as one self-contained file (the hook package, standard library "
        "only) that runs on the host's python3, and print its path for "
        "`gpu-cdi generate --hook-path`."
    )
    p.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        metavar="DIR",
        help=f"existing directory to install {HOOK_PROGRAM} in (default {DEFAULT_PREFIX})",
    )
    p.add_argument(
        "--python",
        default=DEFAULT_PYTHON,
        metavar="PATH",
        help=f"the host's Python >= 3.11 that runs the hook (default {DEFAULT_PYTHON})",
    )
    p.add_argument(
        "--host-root",
        default="/",
        metavar="DIR",
        help="where the host's / is mounted, e.g. /host in a container (default /): the "
        "file goes to DIR/PREFIX, the printed path is the host's",
    )
    p.set_defaults(func=install_command)


def _absolute(flag: str, value: str) -> str:
    if not value.startswith("/"):
        raise InstallError(f"{flag} {value!r}: must be an absolute path")
    return os.path.normpath(value)


def python_minor(python: str, host_root: str) -> int | None:
    """The 3.N minor version of the host interpreter from its file name (python3.N, after
    links within the host root), or None when the name does not say."""
    path = python
    for _ in range(16):  # a link chain longer than this is not an interpreter install
        match = re.fullmatch(r"python3\.(\d+)", os.path.basename(path))
        if match:
            return int(match.group(1))
        try:
            target = os.readlink(on_host(host_root, path))
        except OSError:
            return None
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    return None


def check_python(python: str, host_root: str) -> str | None:
    """Refuse an interpreter that cannot run the hook; a note when it runs it slowly."""
    from cdi.node.hookfile import MIN_PYTHON

    here = on_host(host_root, python)
    if not is_executable(here):
        seen = "" if host_root == "/" else f" (looked at {here})"
        raise InstallError(
            f"--python {python}: no such interpreter on the host{seen}: the hook needs the "
            f"host's python3 >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]}"
        )
    minor = python_minor(python, host_root)
    if minor is None or (3, minor) == sys.version_info[:2]:
        return None
    if (3, minor) < MIN_PYTHON:
        raise InstallError(
            f"--python {python}: is Python 3.{minor}; the hook needs "
            f">= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} (name another with --python)"
        )
    ours = f"{sys.version_info[0]}.{sys.version_info[1]}"
    return (
        f"note: {python} is Python 3.{minor}, this gpu-cdi runs on {ours}: the hook will "
        f"compile its source at every start (a few ms); install it with a 3.{minor} gpu-cdi "
        "for the fast start"
    )


def _loose_directory(directory: str) -> str | None:
    info = os.stat(directory)
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        return (
            f"warning: {directory} is writable by group or others: whoever can write there can "
            "replace the hook that runtimes run as root"
        )
    return None


def _installed(target: str, data: bytes) -> bool:
    try:
        with open(target, "rb") as stream:
            mode = stat.S_IMODE(os.fstat(stream.fileno()).st_mode)
            return mode == HOOK_MODE and stream.read() == data
    except OSError:
        return False


def install(prefix: str, python: str, host_root: str = "/") -> tuple[str, list[str]]:
    """Install the hook; returns (the host path of the hook, lines to tell the user)."""
    from cdi.errors import WriteError
    from cdi.node import hookfile
    from cdi.release import version
    from cdi.writer import write_atomic

    prefix = _absolute("--prefix", prefix)
    python = _absolute("--python", python)
    host_root = _absolute("--host-root", host_root)
    directory = on_host(host_root, prefix)
    if not os.path.isdir(directory):
        seen = "" if host_root == "/" else f" ({directory})"
        problem = "not a directory" if os.path.exists(directory) else "no such directory"
        raise InstallError(f"--prefix {prefix}: {problem}{seen}: create it or choose another")
    said = [line for line in (check_python(python, host_root),) if line]
    try:
        data = hookfile.render(python, version())
    except (ValueError, LookupError) as error:
        raise InstallError(str(error)) from None
    hook = os.path.join(prefix, HOOK_PROGRAM)
    target = on_host(host_root, hook)
    if _installed(target, data):
        said.append(f"{target}: unchanged, not rewritten")
    else:
        try:
            write_atomic(target, data, HOOK_MODE, what="the hook", make_dirs=False)
        except WriteError as error:
            raise InstallError(str(error)) from None
        said.append(f"{target}: installed ({HOOK_PROGRAM} {version()} for {python})")
    said += [line for line in (_loose_directory(directory),) if line]
    return hook, said


def install_command(args: argparse.Namespace) -> int:
    """Run `gpu-cdi install-hook`."""
    try:
        hook, said = install(args.prefix, args.python, args.host_root)
    except InstallError as error:
        print(f"gpu-cdi install-hook: error: {error}", file=sys.stderr)
        return 2
    for line in said:
        print(line, file=sys.stderr)
    print(hook)
    return 0
