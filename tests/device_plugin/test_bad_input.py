"""gpu-cdi-device-plugin writing to a full disk or a closed pipe, or given a FIFO to read: one
line, exit 2, within a second (issue 15)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.bad_input import WRITE_ERRORS, broken_stdout, one_line, run_briefly
from tests.generator.hosts import INVENTORIES

PLUGIN = [sys.executable, "-m", "device_plugin.cli"]
LIST = ["--list", "--inventory", str(INVENTORIES / "dgx-a100-mig.yaml"), "--mig-strategy", "mixed"]


@pytest.mark.parametrize("kind", sorted(WRITE_ERRORS))
@pytest.mark.parametrize("args", [LIST, ["--help"]], ids=["--list", "--help"])
def test_a_failing_stdout_is_one_line(kind: str, args: list[str]) -> None:
    with broken_stdout(kind) as fd:
        proc = run_briefly([*PLUGIN, *args], stdout=fd)
    assert proc.returncode == 2
    assert one_line(proc) == (
        f"gpu-cdi-device-plugin: error: cannot write to stdout: {WRITE_ERRORS[kind]}"
    )


def test_a_failing_stderr_still_fails() -> None:
    with broken_stdout("full") as fd:
        proc = run_briefly([*PLUGIN, "--bogus"], stderr=fd)
    assert proc.returncode == 2


def test_a_fifo_as_config_file_is_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    proc = run_briefly([*PLUGIN, *LIST, "--config-file", str(fifo)])
    assert (proc.returncode, proc.stdout) == (2, "")
    assert one_line(proc) == (
        f"gpu-cdi-device-plugin: error: {fifo}: cannot read the config file: not a regular "
        "file (a FIFO)"
    )
