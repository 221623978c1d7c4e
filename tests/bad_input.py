"""Running a program on bad input as a user would: it must end within a second, with one line.

Shared by the bad-input tables of each program (issue 15). The bound is a subprocess timeout,
not a timed assertion: a case that hangs (a FIFO opened for reading, a retry loop) fails. A
case that overran is run once more before it fails, so that one slow start of the
interpreter on a loaded machine is not taken for a hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

WITHIN = 1.0  # seconds, the bound for every case
ROOT = Path(__file__).resolve().parents[1]


def run_briefly(
    argv: Sequence[str],
    *,
    stdout: int = subprocess.PIPE,
    stderr: int = subprocess.PIPE,
    stdin: int | bytes = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    """Run `argv`; `stdout` and `stderr` are pipes, or file descriptors (/dev/full's, say)."""
    for attempt in (1, 2):
        try:
            return subprocess.run(
                list(argv),
                stdout=stdout,
                stderr=stderr,
                stdin=stdin if isinstance(stdin, int) else None,
                input=stdin.decode() if isinstance(stdin, bytes) else None,
                text=True,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                timeout=WITHIN,
                check=False,
            )
        except subprocess.TimeoutExpired:
            if attempt == 2:
                pytest.fail(f"{' '.join(argv)}: still running after {WITHIN} s, twice")
    raise AssertionError("unreachable")


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The only line `proc` wrote on stderr (no traceback)."""
    assert "Traceback" not in proc.stderr and "Exception" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def gpu_cdi(*args: str) -> list[str]:
    """The argv of `gpu-cdi ARGS` (this checkout's)."""
    return [sys.executable, "-m", "cdi", *args]


@contextmanager
def broken_stdout(kind: str) -> Iterator[int]:
    """A file descriptor whose writes fail: `full` (/dev/full: ENOSPC) or `pipe` (a pipe whose
    reader has gone: EPIPE)."""
    if kind == "full":
        fd = os.open("/dev/full", os.O_WRONLY)
    else:
        read, fd = os.pipe()
        os.close(read)
    try:
        yield fd
    finally:
        os.close(fd)


WRITE_ERRORS = {"full": "No space left on device", "pipe": "Broken pipe"}
