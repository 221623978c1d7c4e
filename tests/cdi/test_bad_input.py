"""`gpu-cdi validate` and `gpu-cdi list` on bad input, and every `gpu-cdi` subcommand writing
to a full disk or a closed pipe: one line, an exit code, within a second (issue 15)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bad_input import WRITE_ERRORS, broken_stdout, gpu_cdi, one_line, run_briefly
from tests.cdi.specs import device_spec, write

GOOD = device_spec("vendor.com/device", "a", "b")


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))  # left bound: the test only needs the file


def _to_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")  # read, it would never end


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (_fifo, "cannot read the file: not a regular file (a FIFO)"),
        (_socket, "cannot read the file: not a regular file (a socket)"),
        (_to_zero, "cannot read the file: not a regular file (a character device)"),
        (Path.mkdir, "cannot read the file: not a regular file (a directory)"),
    ],
)
def test_files_that_are_not_files(tmp_path: Path, make: Callable[[Path], None], says: str) -> None:
    bad = tmp_path / "bad.yaml"
    make(bad)
    write(tmp_path, "good.yaml", GOOD)
    proc = run_briefly(gpu_cdi("validate", str(bad)))
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, f"INVALID {bad}: {says}\n", "")
    proc = run_briefly(gpu_cdi("list", "--spec-dir", str(tmp_path)))
    assert proc.stdout == (
        f"vendor.com/device=a\t{tmp_path}/good.yaml\nvendor.com/device=b\t{tmp_path}/good.yaml\n"
    )
    if bad.is_dir():  # the registry skips subdirectories, as the reference does
        assert (proc.returncode, proc.stderr) == (0, "")
    else:
        assert proc.returncode == 1
        assert one_line(proc) == f"error: {bad}: {says}"


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        (
            "spec.txt",
            GOOD,
            "{path}: CDI registries read only .yaml and .json files: this one is ignored",
        ),
        (
            "spec.YAML",
            GOOD,
            "{path}: CDI registries read only .yaml and .json files: this one is ignored",
        ),
        (
            "big.yaml",
            GOOD.replace('"a"', "99999999999999999999999"),
            "{path}: devices[0]: name: expected a string, got integer 99999999999999999999999 "
            '(beyond 64 bits) (quote it: "99999999999999999999999") (line 4, column 11)',
        ),
        (
            "big.json",
            '{"cdiVersion": "0.5.0", "kind": "a.com/b", "devices": [{"name": "x", '
            '"containerEdits": {"deviceNodes": [{"path": "/dev/x", "major": 1'
            + "0" * 20
            + "}]}}]}",
            '{path}: device "x": containerEdits.deviceNodes[0].major: expected a 64-bit '
            "integer, got number 1" + "0" * 20 + " (beyond 64 bits) (line 1, column 133)",
        ),
    ],
)
def test_validate_says_what_a_registry_would(
    tmp_path: Path, name: str, text: str, says: str
) -> None:
    path = write(tmp_path, name, text)
    proc = run_briefly(gpu_cdi("validate", str(path)))
    assert (proc.returncode, proc.stderr) == (1, "")
    assert proc.stdout == f"INVALID {says.format(path=path)}\n"


def test_list_says_each_conflict_once_and_names_missing_dirs(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", GOOD)
    b = write(tmp_path, "b.yaml", device_spec("vendor.com/device", "b", "c"))
    missing = tmp_path / "missing"
    proc = run_briefly(gpu_cdi("list", "--spec-dir", str(tmp_path), "--spec-dir", str(missing)))
    assert proc.returncode == 1
    assert proc.stdout == f"vendor.com/device=a\t{a}\nvendor.com/device=c\t{b}\n"
    assert proc.stderr.splitlines() == [
        f"note: {missing}: no such spec dir (nothing read from it)",
        f'error: conflicting device "vendor.com/device=b": defined in "{b}" and "{a}" at the '
        "same priority; the device is dropped",
    ]
    proc = run_briefly(gpu_cdi("list", "--spec-dir", str(missing)))
    assert (proc.returncode, proc.stdout) == (0, "")
    assert one_line(proc) == f"note: {missing}: no such spec dir (nothing read from it)"


@pytest.mark.parametrize("kind", sorted(WRITE_ERRORS))
@pytest.mark.parametrize(
    "args",
    [
        ["validate", "{spec}"],
        ["list", "--spec-dir", "{dir}"],
        ["generate", "--inventory", "specs/inventories/workstation.yaml"],
        ["--help"],
        ["generate", "--help"],
        ["inventory", "--help"],
    ],
    ids=lambda args: " ".join(args),
)
def test_a_failing_stdout_is_one_line_and_exit_2(
    tmp_path: Path, kind: str, args: list[str]
) -> None:
    spec = write(tmp_path, "a.yaml", GOOD)
    args = [arg.format(spec=spec, dir=tmp_path) for arg in args]
    with broken_stdout(kind) as fd:
        proc = run_briefly(gpu_cdi(*args), stdout=fd)
    assert proc.returncode == 2
    assert one_line(proc) == f"gpu-cdi: error: cannot write to stdout: {WRITE_ERRORS[kind]}"


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "--inventory", "specs/inventories/workstation.yaml", "--output", "{dir}/x"],
        ["list", "--spec-dir", "{dir}/none"],
        ["--bogus"],
    ],
)
def test_a_failing_stderr_is_exit_2(tmp_path: Path, args: list[str]) -> None:
    spec = write(tmp_path, "a.yaml", GOOD)
    args = [arg.format(spec=spec, dir=tmp_path) for arg in args]
    with broken_stdout("full") as fd:
        proc = run_briefly(gpu_cdi(*args), stderr=fd)
    assert proc.returncode == 2
