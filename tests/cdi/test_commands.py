"""`gpu-cdi validate` and `gpu-cdi list` through the `gpu-cdi` command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cdi.cli import main
from tests.cdi.specs import device_spec, write


def run(argv: list[str]) -> int:
    return main(argv)


def test_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "good.yaml", device_spec("nvidia.com/gpu", "0", "1"))
    assert run(["validate", str(good)]) == 0
    assert capsys.readouterr().out == (
        f"OK {good}: 2 devices of nvidia.com/gpu, cdiVersion 0.5.0 (minimum 0.5.0)\n"
    )
    bad = write(tmp_path, "bad.yaml", device_spec("nvidia.com/gpu", "gpu 0"))
    missing = tmp_path / "missing.json"
    assert run(["validate", str(good), str(bad), str(missing)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"OK {good}")
    assert lines[1] == (
        f'INVALID {bad}: device "gpu 0": invalid device name "gpu 0": invalid character '
        "' ' (allowed: letters, digits, '_', '.', ':', '-' inside)"
    )
    assert lines[2] == f"INVALID {missing}: cannot read the file: No such file or directory"


def test_validate_and_list_do_not_block_on_a_fifo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    assert run(["validate", str(fifo)]) == 1
    assert capsys.readouterr().out == (
        f"INVALID {fifo}: cannot read the file: not a regular file (a FIFO)\n"
    )
    assert run(["list", "--spec-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"error: {fifo}: cannot read the file: not a regular file (a FIFO)\n"
    )


def test_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    low, high = tmp_path / "low", tmp_path / "high"
    a = write(low, "a.yaml", device_spec("nvidia.com/gpu", "0", "1"))
    b = write(high, "b.yaml", device_spec("nvidia.com/gpu", "1"))
    assert run(["list", "--spec-dir", str(low), "--spec-dir", str(high)]) == 0
    out = capsys.readouterr().out
    assert out == f"nvidia.com/gpu=0\t{a}\nnvidia.com/gpu=1\t{b}\n"
    broken = write(high, "c.yaml", "kind: [\n")
    assert run(["list", "--spec-dir", str(low), "--spec-dir", str(high)]) == 1
    captured = capsys.readouterr()
    assert captured.out == out
    assert captured.err.startswith(f"error: {broken}: invalid YAML: line 2")


def test_console_entry_point(tmp_path: Path) -> None:
    import subprocess
    import sys

    good = write(tmp_path, "good.yaml", device_spec("nvidia.com/gpu", "0"))
    bad = write(tmp_path, "bad.json", '{"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu"')
    result = subprocess.run(
        [sys.executable, "-m", "cdi", "validate", str(good), str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"OK {good}: 1 devices")
    assert lines[1].startswith(f"INVALID {bad}: invalid JSON: line 2, column 1: did not find")
    assert result.stderr == ""
