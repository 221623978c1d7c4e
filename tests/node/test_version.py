"""`--version` of every program: the version pip recorded for the installed distribution."""

from __future__ import annotations

import subprocess
from importlib.metadata import version

import pytest

from tests.node.support import BIN, PROGRAMS


@pytest.mark.parametrize("program", PROGRAMS)
def test_version_comes_from_the_package_metadata(program: str) -> None:
    proc = subprocess.run(
        [str(BIN / program), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        f"{program} {version('gpu-cdi')}\n",
        "",
    )
