"""gpu-cdi-hook: OCI createContainer hook actions for NVIDIA GPUs, inside the container rootfs."""

from __future__ import annotations

import sys

from cdi.hook.args import PROG, USAGE, parse
from cdi.hook.errors import HookError, UsageError

TYPE_CHECKING = False  # typing would cost ~8 ms of start-up
if TYPE_CHECKING:
    from typing import BinaryIO

VERSION = "0.1.0"


def run(argv: list[str], stdin: BinaryIO) -> int:
    """Parse `argv`, read the OCI state from `stdin`, run the actions; raises HookError."""
    if argv[:1] in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        sys.stdout.flush()  # a write error is said by main, not at exit
        return 0
    if argv[:1] == ["--version"]:
        sys.stdout.write(f"{PROG} {VERSION}\n")
        sys.stdout.flush()
        return 0
    steps = parse(argv)
    from cdi.hook.rootfs import Rootfs
    from cdi.hook.state import read_state, rootfs_path

    state = read_state(stdin)
    with Rootfs(rootfs_path(state["bundle"])) as root:
        for name, action in steps:
            try:
                action(root)
            except HookError as err:
                raise HookError(f"{name}: {err}") from None
            except OSError as err:
                # Anything the rootfs layer did not word itself still names its file.
                where = f" {err.filename}" if err.filename else ""
                raise HookError(f"{name}:{where} {err.strerror}") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 1 failed, 2 bad command line)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if sys.stdin is None:  # started with stdin closed
            raise HookError("OCI state on stdin: no stdin (the runtime passes the state there)")
        return run(args, sys.stdin.buffer)
    except UsageError as err:
        sys.stderr.write(f"{PROG}: {err} (see {PROG} --help)\n")
        return 2
    except HookError as err:
        sys.stderr.write(f"{PROG}: {err}\n")
        return 1
    except OSError as err:  # actions word their own: this is --help or --version
        import os

        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())  # what is still buffered would fail again at exit
        sys.stderr.write(f"{PROG}: cannot write to stdout: {err.strerror}\n")
        return 1
    except Exception as err:  # a bug: still one line, the runtime shows it to the user
        line = " ".join(f"internal error: {type(err).__name__}: {err}".split())
        sys.stderr.write(f"{PROG}: {line}\n")
        return 1
