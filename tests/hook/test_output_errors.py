"""gpu-cdi-hook writing to a full disk or a closed pipe: one line, exit 1, within a second, in
each of the three ways it is started (issue 15)."""

from __future__ import annotations

import pytest

from tests.bad_input import WRITE_ERRORS, broken_stdout, one_line, run_briefly
from tests.hook.helpers import hook_argv


@pytest.mark.parametrize("form", ["fast", "module", "script"])
@pytest.mark.parametrize("kind", sorted(WRITE_ERRORS))
@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_a_failing_stdout_is_one_line(form: str, kind: str, flag: str) -> None:
    with broken_stdout(kind) as fd:
        proc = run_briefly([*hook_argv(form), flag], stdout=fd)
    assert proc.returncode == 1
    assert one_line(proc) == f"gpu-cdi-hook: cannot write to stdout: {WRITE_ERRORS[kind]}"


@pytest.mark.parametrize("form", ["fast", "script"])
def test_a_failing_stderr_still_fails(form: str) -> None:
    with broken_stdout("full") as fd:
        proc = run_briefly([*hook_argv(form), "no-such-action"], stderr=fd)
    assert proc.returncode != 0
