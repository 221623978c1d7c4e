"""How a spec should invoke this hook program: the fastest form that needs no PATH or site.

The pip console script `gpu-cdi-hook` runs the interpreter with `site` (every .pth file of the
environment) and imports `re`; on the CI machine that is ~20 ms against ~7 ms for
`python -I -S .../cdi/hook/__main__.py`. -I also makes the interpreter ignore PYTHON* variables
and never put the working directory (the container rootfs, when the runtime runs the hook) on
sys.path.
"""

from __future__ import annotations

import os
import sys

# Passed as the hook's env: a hook with no env inherits the container process's environment
# from runc (LD_PRELOAD from the image: CVE-2025-23266), so the spec must always set one.
HOOK_ENV = ["GPU_CDI_HOOK=1"]


def hook_main_path() -> str:
    """Absolute path of this package's __main__.py."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py")


def hook_command(python: str | None = None, main_path: str | None = None) -> tuple[str, list[str]]:
    """(hook path, args prefix) for a spec's hook entry; action args follow the prefix."""
    exe = python or sys.executable
    if not exe or not os.path.isabs(exe):
        raise ValueError(f"python interpreter {exe!r} is not an absolute path")
    return exe, [exe, "-I", "-S", main_path or hook_main_path()]
