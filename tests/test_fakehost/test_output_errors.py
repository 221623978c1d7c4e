"""gpu-cdi-fakehost writing to a full disk or a closed pipe: one line, exit 2, within a second
(issue 15)."""

from __future__ import annotations

import sys

import pytest

from tests.bad_input import WRITE_ERRORS, broken_stdout, one_line, run_briefly

FAKEHOST = [sys.executable, "-m", "gpu_cdi_fakehost"]


@pytest.mark.parametrize("kind", sorted(WRITE_ERRORS))
@pytest.mark.parametrize("args", [["list"], ["--help"], ["build", "--help"]], ids=" ".join)
def test_a_failing_stdout_is_one_line(kind: str, args: list[str]) -> None:
    with broken_stdout(kind) as fd:
        proc = run_briefly([*FAKEHOST, *args], stdout=fd)
    assert proc.returncode == 2
    assert one_line(proc) == f"gpu-cdi-fakehost: cannot write to stdout: {WRITE_ERRORS[kind]}"


def test_a_failing_stderr_still_fails() -> None:
    with broken_stdout("full") as fd:
        proc = run_briefly([*FAKEHOST, "--bogus"], stderr=fd)
    assert proc.returncode == 2
