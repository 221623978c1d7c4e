"""gpu-cdi-fakehost on bad input: one line naming what is wrong and where, exit 2, nothing built,
no traceback and no hang (FIFOs, devices, binary files, typos that would loop for ever)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from gpu_cdi_fakehost.__main__ import main
from gpu_cdi_fakehost.topology import topologies_dir

WORKSTATION = (topologies_dir() / "workstation.yaml").read_text()


def _with(change: Callable[[dict[str, object]], None]) -> str:
    data = yaml.safe_load(WORKSTATION)
    change(data)
    return yaml.safe_dump(data)


def _gpu(key: str, value: object) -> Callable[[dict[str, object]], None]:
    def change(data: dict[str, object]) -> None:
        data["gpus"][0][key] = value  # type: ignore[index]

    return change


# (file name, content: bytes, text, or None for a FIFO, expected message after the path)
CASES: list[tuple[str, bytes | str | None, str]] = [
    (
        "binary.yaml",
        b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)),
        ": not UTF-8 text (byte 136 is 0x80)",
    ),
    ("latin1.yaml", "name: caf\xe9\n".encode("latin-1"), ": not UTF-8 text (byte 9 is 0xe9)"),
    ("fifo.yaml", None, ": cannot read topology: not a regular file"),
    ("deep.yaml", "[" * 100_000, ":1:1001: not valid YAML: while increasing flow level"),
    ("tabs.yaml", "name: x\n\tgpus: []\n", ":2:1: not valid YAML: while scanning"),
    ("dup.yaml", WORKSTATION + "name: again\n", ":13:1: not valid YAML: duplicate key 'name'"),
    ("empty.yaml", "", ": top level: expected a mapping, got NoneType None"),
    ("minor.yaml", _with(_gpu("minor", 10**30)), ": gpus[0].minor: must be <= 253, got 1000"),
    ("ids.yaml", _with(_gpu("pci_device_id", 2**40)), ": gpus[0].pci_device_id: must be <= "),
    ("cc.yaml", _with(_gpu("compute_capability", "800.0")), ": gpus[0].compute_capability: "),
    (
        "imex.yaml",
        _with(lambda d: d.update(imex_channels=10**9)),
        ": imex_channels: must be <= 2048, got 1000000000",
    ),
    (
        "mem.yaml",
        _with(_gpu("memory", {"total_mib": 2**62})),
        ": gpus[0].memory.total_mib: must be <= 4294967296",
    ),
    (
        "code.yaml",
        _with(lambda d: d.update(errors=[{"call": "*", "error": 10**20}])),
        ": errors[0].error: 100000000000000000000 is not an nvmlReturn_t value",
    ),
]


@pytest.mark.parametrize(("name", "content", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_topology_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes | str | None,
    message: str,
) -> None:
    path = tmp_path / name
    if content is None:
        os.mkfifo(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    root = tmp_path / "root"
    rc = main(["build", "--topology", str(path), "--root", str(root), "--no-device-nodes"])
    out, err = capsys.readouterr()
    assert (rc, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith(f"gpu-cdi-fakehost: {path}"), err
    assert message in err
    assert not root.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--topology", "/dev/zero"], "/dev/zero: cannot read topology: not a regular file"),
        (["--topology", "/"], "/: cannot read topology: a directory"),
        (["--topology", ""], "--topology: empty"),
        (["--root", ""], "--root: empty"),
        (["--root", "{tmp}/file/sub"], "--root {tmp}/file/sub: {tmp}/file is not a directory"),
        (["--root", "/proc/nope"], "--root /proc/nope: cannot create a directory in /proc: "),
        (["--driver-version", ""], "--driver-version: not a driver version: ''"),
    ],
)
def test_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "file").write_text("")
    args = {"--topology": "workstation", "--root": str(tmp_path / "root")}
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        args[flag] = value.format(tmp=tmp_path)
    rc = main(["build", *(x for kv in args.items() for x in kv), "--no-device-nodes"])
    _, err = capsys.readouterr()
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("gpu-cdi-fakehost: "), err
    assert message.format(tmp=tmp_path) in err


def test_event_into_a_fifo_or_a_stranger(
    fakehost: Callable[..., object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = fakehost("workstation", device_nodes=False)
    events = host.events_file  # type: ignore[attr-defined]
    events.unlink()
    os.mkfifo(events)
    root = str(host.root)  # type: ignore[attr-defined]
    assert main(["event", "--root", root, "xid", "0", "48"]) == 2
    assert capsys.readouterr().err == (
        f"gpu-cdi-fakehost: {events}: cannot write events: No such device or address\n"
    )
    stranger = tmp_path / "stranger"
    (stranger / ".fakehost").mkdir(parents=True)
    (stranger / ".fakehost/nvml-topology.txt").write_bytes(b"\xff\xfe")
    assert main(["event", "--root", str(stranger), "lost", "0"]) == 2
    assert "nvml-topology.txt: not a fake NVML topology file" in capsys.readouterr().err


def test_binary_topology_in_a_real_process(tmp_path: Path) -> None:
    """The case of issue 15, end to end: one line, no traceback."""
    exe = shutil.which("gpu-cdi-fakehost") or str(Path(sys.executable).parent / "gpu-cdi-fakehost")
    binary = tmp_path / "topology.yaml"
    binary.write_bytes(Path(sys.executable).read_bytes()[:4096])
    proc = subprocess.run(
        [exe, "build", "--topology", str(binary), "--root", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"gpu-cdi-fakehost: {binary}: not UTF-8 text")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
