"""The atomic writer: minimal version, refusal of too-old versions, 0644, no leftovers."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cdi import codec
from cdi.errors import SpecError, WriteError
from cdi.spec import ContainerEdits, Device, DeviceNode, Spec
from cdi.writer import write_spec, write_text

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
    # Below the floor, nothing in the content is to blame (this once read "( needs it)").
    floor = Spec("0.3.0", "nvidia.com/gpu", devices=[Device("x", ContainerEdits(env=["A=1"]))])
    with pytest.raises(
        WriteError,
        match=r'cdiVersion "0.2.0": the content needs at least 0.3.0 '
        r"\(the oldest usable spec version\)$",
    ):
        write_spec(floor, str(path), version="0.2.0")
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
    with pytest.raises(WriteError, match=r"x\.yaml: is a directory, not a file"):
        write_spec(SPEC, str(tmp_path / "x.yaml"))
    assert os.listdir(tmp_path) == ["x.yaml"]


def test_a_symlink_is_followed_and_its_target_replaced(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "spec.yaml").write_text("old content\n")
    link = tmp_path / "nvidia.yaml"
    link.symlink_to("real/spec.yaml")
    assert write_spec(SPEC, str(link)) is True
    assert os.readlink(link) == "real/spec.yaml"
    assert codec.load_spec(str(real / "spec.yaml")).devices == SPEC.devices
    assert sorted(os.listdir(real)) == ["spec.yaml"]
    assert write_spec(SPEC, str(link)) is False  # compared through the link too
    dangling = tmp_path / "other.yaml"
    dangling.symlink_to("real/new.yaml")
    assert write_spec(SPEC, str(dangling)) is True
    assert dangling.is_symlink() and (real / "new.yaml").is_file()


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _loop(path: Path) -> None:
    path.symlink_to(path.name + ".2")
    Path(f"{path}.2").symlink_to(path.name)


def _to_null(path: Path) -> None:
    path.symlink_to("/dev/null")


@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        ("d/", None, "d/: names a directory (it ends in '/'): give the file's path, e.g. "),
        ("x.yaml", Path.mkdir, "x.yaml: is a directory, not a file: refusing to write there"),
        ("x.yaml", _fifo, "x.yaml: is a FIFO, not a file: refusing to write there"),
        ("x.yaml", _to_null, "x.yaml: is a character device, not a file: refusing to write"),
        ("x.yaml", _loop, "x.yaml: Too many levels of symbolic links"),
        ("f/x.yaml", None, "f/x.yaml: cannot write the spec: {tmp}/f is not a directory"),
        ("f/sub/x.yaml", None, "f/sub/x.yaml: cannot write the spec: {tmp}/f is not a directory"),
    ],
)
def test_paths_that_cannot_be_a_spec_file(
    tmp_path: Path, name: str, make: Callable[[Path], None] | None, says: str
) -> None:
    (tmp_path / "f").write_text("a file")
    if make is not None:
        make(tmp_path / name)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(WriteError) as caught:
        write_text(f"{tmp_path}/{name}", "text\n")
    assert str(caught.value).startswith(f"{tmp_path}/" + says.format(tmp=tmp_path))
    assert sorted(os.listdir(tmp_path)) == before
    assert (tmp_path / "f").read_text() == "a file"


def _locked_by_a_process(path: Path) -> subprocess.Popen[str]:
    """A process holding write_atomic's lock on `path`, as a writer does while it writes."""
    code = (
        "import os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)\n"
        "os.lockf(fd, os.F_LOCK, 0)\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "locked\n"
    return child


def test_temp_files_of_killed_writers_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "nvidia.yaml"
    stale = tmp_path / ".nvidia.yaml.0123abcd.tmp"
    stale.write_text("half a spec")
    killed = _locked_by_a_process(tmp_path / ".nvidia.yaml.deadbeef.tmp")
    killed.send_signal(signal.SIGKILL)  # the kernel drops its lock
    killed.wait()
    live = _locked_by_a_process(tmp_path / ".nvidia.yaml.89abcdef.tmp")
    try:
        kept = [
            ".nvidia.yaml.89abcdef.tmp",  # its writer is still at work
            ".other.yaml.0123abcd.tmp",  # another file's
            ".nvidia.yaml.0123ABCD.tmp",  # not a name write_atomic makes
            ".nvidia.yaml.0123abc.tmp",
            ".nvidia.yaml.fedcba98.tmp",  # a FIFO: never opened in a blocking way
            ".nvidia.yaml.aaaaaaaa.tmp",  # a directory
        ]
        for name in kept[1:4]:
            (tmp_path / name).write_text("")
        os.mkfifo(tmp_path / kept[4])
        (tmp_path / kept[5]).mkdir()
        assert write_spec(SPEC, str(path)) is True
        assert sorted(os.listdir(tmp_path)) == sorted([*kept, "nvidia.yaml"])
        # The next write (even an unchanged one) removes what is stale by then.
        live.kill()
        live.wait()
        assert write_spec(SPEC, str(path)) is False
        assert sorted(os.listdir(tmp_path)) == sorted([*kept[1:], "nvidia.yaml"])
    finally:
        live.kill()
        live.wait()
