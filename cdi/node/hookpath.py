"""Which hook program a generated spec names, found the way nvidia-ctk finds nvidia-cdi-hook.

Order: the `gpu-cdi-hook` installed beside the running `gpu-cdi` (same bin directory, as pip
installs them; for `python -m cdi`, beside the interpreter), else the first one on PATH, else
/usr/bin/gpu-cdi-hook. A spec whose hook does not exist on the host makes every container that
asks for a GPU fail at start, so `generate` warns about it at once.
"""

from __future__ import annotations

import os
import sys

HOOK_PROGRAM = "gpu-cdi-hook"
FALLBACK = f"/usr/bin/{HOOK_PROGRAM}"
GENERATOR_PROGRAM = "gpu-cdi"


def is_executable(path: str) -> bool:
    """Whether `path` (in this filesystem) is a file this process may execute."""
    return os.path.isfile(path) and os.access(path, os.X_OK)


def on_host(host_root: str, path: str) -> str:
    """Where the host's absolute `path` is in this filesystem, the host's / being at
    `host_root`; no symlink is looked at."""
    return os.path.join(host_root, path.lstrip("/"))


def candidates(argv0: str, interpreter: str, search_path: str) -> list[str]:
    """Where to look for the hook, in order (absolute paths, duplicates removed)."""
    if os.path.basename(argv0) == GENERATOR_PROGRAM:
        beside = [os.path.dirname(os.path.abspath(argv0))]
    else:  # python -m cdi: pip puts the programs beside the interpreter (a venv's bin/, not
        beside = [os.path.dirname(interpreter)] if interpreter else []  # its resolved link)
    on_path = [d for d in search_path.split(os.pathsep) if d.startswith("/")]
    found: list[str] = []
    for folder in (*beside, *on_path):
        path = os.path.join(folder, HOOK_PROGRAM)
        if path not in found:
            found.append(path)
    return found


def default_hook_path(
    argv0: str | None = None, interpreter: str | None = None, search_path: str | None = None
) -> str:
    """The hook program a spec names when --hook-path is not given."""
    for path in candidates(
        sys.argv[0] if argv0 is None else argv0,
        sys.executable if interpreter is None else interpreter,
        os.environ.get("PATH", "") if search_path is None else search_path,
    ):
        if is_executable(path):
            return path
    return FALLBACK


def missing_warning(path: str, host_root: str | None = None) -> str | None:
    """One line when `path` is not an executable file on the host (seen under `host_root`)."""
    host_root = host_root or "/"
    where = on_host(host_root, path)
    if is_executable(where):
        return None
    problem = "is not executable" if os.path.exists(where) else "does not exist"
    seen = "" if os.path.normpath(host_root) == "/" else f" (looked at {where})"
    return (
        f"warning: the hook {path} {problem} on this host{seen}: every container given this "
        "spec will fail to start; install it (gpu-cdi install-hook) or name it with --hook-path"
    )
