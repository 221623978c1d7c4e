"""The atomic writer: minimal version, refusal of too-old versions, 0644, no leftovers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cdi import codec
from cdi.errors import SpecError, WriteError
from cdi.spec import ContainerEdits, Device, DeviceNode, Spec
from cdi.writer import write_spec

SPEC = Spec(
    "0.8.0",
    "nvidia.com/gpu",
    devices=[
        Device("0", ContainerEdits(device_nodes=[DeviceNode("/dev/nvidia0", "/dev/nvidia0")]))
    ],
)


def test_writes_minimum_version_and_mode(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)
    try:
        path = tmp_path / "sub" / "nvidia.yaml"
        assert write_spec(SPEC, str(path)) is True
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    loaded = codec.load_spec(str(path))
    assert loaded.version == "0.5.0"
    assert loaded.devices == SPEC.devices
    assert path.read_text().startswith("---\n")
    assert sorted(os.listdir(path.parent)) == ["nvidia.yaml"]


def test_unchanged_content_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "nvidia.json"
    assert write_spec(SPEC, str(path)) is True
    inode = path.stat().st_ino
    assert write_spec(SPEC, str(path)) is False
    assert path.stat().st_ino == inode
    assert codec.load_spec(str(path)).version == "0.5.0"
    os.chmod(path, 0o600)
    assert write_spec(SPEC, str(path)) is False
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert write_spec(SPEC, str(path), version="0.6.0") is True
    assert path.stat().st_ino != inode
    assert codec.load_spec(str(path)).version == "0.6.0"


def test_version_too_old_or_unknown_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nvidia.yaml"
    with pytest.raises(WriteError, match=r'cdiVersion "0.4.0": the content needs at least 0.5.0'):
        write_spec(SPEC, str(path), version="0.4.0")
    with pytest.raises(WriteError, match="not a version"):
        write_spec(SPEC, str(path), version="1.0.0")
    with pytest.raises(WriteError, match=r"must end in \.yaml or \.json"):
        write_spec(SPEC, str(tmp_path / "nvidia.yml"))
    with pytest.raises(SpecError, match="empty device edits"):
        write_spec(Spec("0.3.0", "nvidia.com/gpu", devices=[Device("x")]), str(path))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("failing", ["write", "fsync", "rename", "fchmod"])
def test_failure_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "nvidia.yaml"
    path.write_text("old content\n")
    real = getattr(os, failing)

    def broken(*args: object) -> object:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, broken)
    with pytest.raises(WriteError) as caught:
        write_spec(SPEC, str(path))
    monkeypatch.setattr(os, failing, real)
    assert str(caught.value) == f"{path}: cannot write the spec: No space left on device"
    assert path.read_text() == "old content\n"
    assert os.listdir(tmp_path) == ["nvidia.yaml"]


def test_target_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").mkdir()
    with pytest.raises(WriteError, match="cannot write the spec"):
        write_spec(SPEC, str(tmp_path / "x.yaml"))
    assert os.listdir(tmp_path) == ["x.yaml"]
