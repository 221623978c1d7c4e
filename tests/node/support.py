"""Running `gpu-cdi` subcommands of the node area as their own processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # where pip put our programs (make venv)


def gpu_cdi(
    args: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`gpu-cdi ARGS` (the installed console script), output as text."""
    return subprocess.run(
        [str(BIN / "gpu-cdi"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd or PROJECT,
        timeout=120,
        check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The single stderr line of a failed run (exit 2, nothing on stdout), checked for
    `needles`."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "", proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def install_hook(prefix: Path, *extra: str) -> Path:
    """`gpu-cdi install-hook --prefix PREFIX`: the path it printed (checked to be the file)."""
    proc = gpu_cdi(["install-hook", "--prefix", str(prefix), *extra])
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert proc.stdout == f"{path}\n"
    return path


def read_only(directory: Path, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run `argv` with `directory` mounted read-only (a private mount namespace: needs root)."""
    from tests.require import need_root, need_tool

    need_root()
    unshare = need_tool("unshare")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", script, "sh",
         str(directory), *argv],
        capture_output=True, text=True, timeout=120, cwd=PROJECT,
    )  # fmt: skip
