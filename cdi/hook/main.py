"""gpu-cdi-hook: OCI createContainer hook actions for NVIDIA GPUs, inside the container rootfs."""

from __future__ import annotations

import sys

from cdi.hook.args import PROG, USAGE, parse
from cdi.hook.errors import HookError, UsageError

TYPE_CHECKING = False  # typing would cost ~8 ms of start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, BinaryIO

    from cdi.hook.rootfs import Rootfs

VERSION = "0.1.0"


def run(argv: list[str], stdin: BinaryIO | None) -> int:
    """Parse `argv`, read the OCI state from `stdin`, run the actions; raises HookError.

    Every error names the action it stopped: the runtime shows only this line, and one hook
    call carries all the actions of a container.
    """
    if argv[:1] in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        return 0
    if argv[:1] == ["--version"]:
        sys.stdout.write(f"{PROG} {VERSION}\n")
        return 0
    steps = parse(argv)
    from cdi.hook.rootfs import Rootfs
    from cdi.hook.state import load_container

    names = ", ".join(dict.fromkeys(name for name, _ in steps))
    try:
        if stdin is None:  # started with stdin closed
            raise HookError("OCI state on stdin: no stdin (the runtime passes the state there)")
        container = load_container(stdin)
        root = Rootfs(container.rootfs)
    except HookError as err:
        raise HookError(f"{names}: {err}") from None
    # Actions may leave work running (update-ldcache's ldconfig): finished after the rest.
    pending: list[tuple[str, Any]] = []
    with root:
        try:
            for name, action in steps:
                result = _named(name, root, action, root, container)
                if hasattr(result, "finish"):
                    pending.append((name, result))
            while pending:
                name, work = pending[0]
                _named(name, root, work.finish)
                pending.pop(0)
        finally:
            for _, work in pending:
                work.abort()
    return 0


def _named(name: str, root: Rootfs, call: Callable[..., object], *args: object) -> object:
    """call(*args); any error becomes one line naming the action `name`."""
    try:
        return call(*args)
    except HookError as err:
        raise HookError(f"{name}: {err}") from None
    except OSError as err:
        # Anything the rootfs layer did not word itself still names a path.
        where = err.filename or f"(in rootfs {root.path})"
        raise HookError(f"{name}: {where}: {err.strerror or err}") from None


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 1 failed, 2 bad command line)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        return run(args, sys.stdin.buffer if sys.stdin is not None else None)
    except UsageError as err:
        sys.stderr.write(f"{PROG}: {err} (see {PROG} --help)\n")
        return 2
    except HookError as err:
        sys.stderr.write(f"{PROG}: {err}\n")
        return 1
    except Exception as err:  # a bug: still one line, the runtime shows it to the user
        line = " ".join(f"internal error: {type(err).__name__}: {err}".split())
        sys.stderr.write(f"{PROG}: {line}\n")
        return 1
