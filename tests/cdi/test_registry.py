"""The registry: files, priorities, conflicts, errors, auto-refresh through inotify."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cdi import dump
from cdi.registry import DEFAULT_SPEC_DIRS, Registry
from cdi.spec import ContainerEdits, Device, DeviceNode, Spec
from cdi.writer import write_spec
from tests.cdi.specs import device_spec, write


def test_default_dirs() -> None:
    assert DEFAULT_SPEC_DIRS == ("/etc/cdi", "/var/run/cdi")


def test_one_dir_conflicts_broken_files_and_ignored_names(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", device_spec("vendor.com/device", "dev0", "only-a"))
    b = write(tmp_path, "b.json", device_spec("vendor.com/device", "dev0", "only-b"))
    broken = write(tmp_path, "broken.yaml", "cdiVersion: [\n")
    write(tmp_path, "c.yml", device_spec("vendor.com/device", "yml"))
    write(tmp_path, "d.YAML", device_spec("vendor.com/device", "upper"))
    (tmp_path / "dir.yaml").mkdir()
    registry = Registry([str(tmp_path)])
    assert registry.devices() == ["vendor.com/device=only-a", "vendor.com/device=only-b"]
    assert registry.resolve("vendor.com/device=dev0") is None
    errors = registry.errors()
    assert set(errors) == {str(a), str(b), str(broken)}
    conflict = (
        f'conflicting device "vendor.com/device=dev0": defined in "{b}" and "{a}" '
        "at the same priority; the device is dropped"
    )
    assert errors[str(a)] == (conflict,)
    assert errors[str(b)] == (conflict,)
    assert errors[str(broken)][0].startswith(f"{broken}: invalid YAML: line 2")
    found = registry.resolve("vendor.com/device=only-b")
    assert found is not None
    assert (found.path, found.priority, found.device.name) == (str(b), 0, "only-b")


def test_priorities(tmp_path: Path) -> None:
    low, high = tmp_path / "low", tmp_path / "high"
    write(low, "x.yaml", device_spec("vendor.com/device", "dev0", "low-only"))
    write(high, "y.yaml", device_spec("vendor.com/device", "dev0", node="/dev/zero"))
    registry = Registry([str(low), str(high)])
    found = registry.resolve("vendor.com/device=dev0")
    assert found is not None and found.path == str(high / "y.yaml") and found.priority == 1
    assert registry.resolve("vendor.com/device=low-only") is not None
    flipped = Registry([str(high), str(low)]).resolve("vendor.com/device=dev0")
    assert flipped is not None and flipped.path == str(low / "x.yaml")
    # the reference's quirk: a conflict in the low dir removes the device altogether
    write(low, "z.yaml", device_spec("vendor.com/device", "dev0"))
    registry = Registry([str(low), str(high)])
    assert registry.resolve("vendor.com/device=dev0") is None
    assert set(registry.errors()) == {str(low / "x.yaml"), str(low / "z.yaml")}
    assert registry.errors() == registry.refresh()


def test_missing_dir_and_symlinks_as_the_reference(tmp_path: Path) -> None:
    target = write(tmp_path / "elsewhere", "t.yaml", device_spec("vendor.com/device", "linked"))
    specs = tmp_path / "specs"
    specs.mkdir()
    os.symlink(target, specs / "link.yaml")
    os.symlink(specs / "nothing", specs / "dangling.yaml")
    os.symlink(tmp_path, specs / "dirlink.yaml")
    (specs / "subdir.yaml").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "linked-dir")
    not_a_dir = write(tmp_path, "file", "")
    registry = Registry(
        [str(tmp_path / "missing"), str(specs), str(not_a_dir), str(tmp_path / "linked-dir")]
    )
    # a spec dir that is a symlink or a file is not read (filepath.Walk does not follow it)
    assert registry.devices() == ["vendor.com/device=linked"]
    errors = registry.errors()
    assert sorted(errors) == [str(specs / "dangling.yaml"), str(specs / "dirlink.yaml")]
    assert "No such file or directory" in errors[str(specs / "dangling.yaml")][0]
    assert "not a regular file (a directory)" in errors[str(specs / "dirlink.yaml")][0]


def test_many_devices_resolve_by_name(tmp_path: Path) -> None:
    names = [str(i) for i in range(300)]
    write(tmp_path, "gpus.yaml", device_spec("nvidia.com/gpu", *names))
    registry = Registry([str(tmp_path)])
    assert len(registry.devices()) == 300
    found = registry.resolve("nvidia.com/gpu=299")
    assert found is not None and found.spec.kind == "nvidia.com/gpu"


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def spec_with(*names: str) -> Spec:
    edits = ContainerEdits(device_nodes=[DeviceNode("/dev/null")])
    return Spec("0.3.0", "vendor.com/device", devices=[Device(name, edits) for name in names])


def test_auto_refresh_follows_writes_renames_and_deletes(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    with Registry([str(specs)], auto_refresh=True, debounce=0.05) as registry:
        assert registry.devices() == []
        write_spec(spec_with("a"), str(specs / "a.yaml"))
        wait_for(lambda: registry.devices() == ["vendor.com/device=a"])
        # written elsewhere and moved in (the reference 0.8 misses this one)
        write_spec(spec_with("b"), str(tmp_path / "b.yaml"))
        os.rename(tmp_path / "b.yaml", specs / "b.yaml")
        wait_for(lambda: registry.devices() == ["vendor.com/device=a", "vendor.com/device=b"])
        (specs / "a.yaml").write_text("broken: [\n")
        wait_for(lambda: registry.devices() == ["vendor.com/device=b"])
        assert str(specs / "a.yaml") in registry.errors()
        os.unlink(specs / "b.yaml")
        wait_for(lambda: registry.devices() == [])


def test_auto_refresh_debounces(tmp_path: Path) -> None:
    texts = [dump.dump_spec(spec_with(f"d{index}")) for index in range(20)]
    with Registry([str(tmp_path)], auto_refresh=True, debounce=0.5) as registry:
        start = registry.generation
        began = time.monotonic()
        for index, text in enumerate(texts):
            (tmp_path / f"s{index}.yaml").write_text(text)
        quick = time.monotonic() - began < 0.4  # all 20 writes inside one debounce window
        wait_for(lambda: len(registry.devices()) == 20)
        time.sleep(0.7)
        if quick:
            assert registry.generation - start <= 2
        assert registry.generation - start < 20


def test_spec_dir_created_later_is_watched(tmp_path: Path) -> None:
    specs = tmp_path / "later"
    with Registry([str(specs)], auto_refresh=True, debounce=0.05) as registry:
        assert registry.devices() == []
        specs.mkdir()
        write_spec(spec_with("x"), str(specs / "x.yaml"))
        wait_for(lambda: registry.devices() == ["vendor.com/device=x"])
        write_spec(spec_with("x", "y"), str(specs / "x.yaml"))
        wait_for(lambda: len(registry.devices()) == 2)


def test_readers_never_see_half_a_refresh(tmp_path: Path) -> None:
    small = spec_with(*(f"s{i}" for i in range(50)))
    big = spec_with(*(f"b{i}" for i in range(400)))
    write_spec(small, str(tmp_path / "x.yaml"))
    seen: set[int] = set()
    mixed: list[set[str]] = []
    stop = threading.Event()
    with Registry([str(tmp_path)], auto_refresh=True, debounce=0.0) as registry:

        def reader() -> None:
            while not stop.is_set():
                snapshot = registry.snapshot
                seen.add(len(snapshot.devices))
                names = {name.rsplit("=", 1)[1][0] for name in snapshot.devices}
                if len(names) > 1:  # devices of both versions together
                    mixed.append(names)

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for round_ in range(6):
                write_spec(big if round_ % 2 == 0 else small, str(tmp_path / "x.yaml"))
                expected = 400 if round_ % 2 == 0 else 50
                wait_for(lambda expected=expected: len(registry.devices()) == expected)
        finally:
            stop.set()
            thread.join()
    assert seen <= {50, 400}
    assert {50, 400} & seen
    assert mixed == []


def test_refresh_parses_only_changed_files(tmp_path: Path) -> None:
    write_spec(spec_with("a"), str(tmp_path / "a.yaml"))
    write_spec(spec_with("b"), str(tmp_path / "b.yaml"))
    (tmp_path / "c.yaml").write_text("broken: [\n")
    registry = Registry([str(tmp_path)])
    before = {name: registry.resolve(name) for name in registry.devices()}
    error_before = registry.errors()[str(tmp_path / "c.yaml")]
    write_spec(spec_with("b", "b2"), str(tmp_path / "b.yaml"))
    registry.refresh()
    after_a = registry.resolve("vendor.com/device=a")
    after_b = registry.resolve("vendor.com/device=b")
    assert after_a is not None and after_b is not None
    assert after_a.spec is before["vendor.com/device=a"].spec  # type: ignore[union-attr]
    assert after_b.spec is not before["vendor.com/device=b"].spec  # type: ignore[union-attr]
    assert registry.resolve("vendor.com/device=b2") is not None
    assert registry.errors()[str(tmp_path / "c.yaml")] == error_before
    os.unlink(tmp_path / "a.yaml")
    registry.refresh()
    assert registry.resolve("vendor.com/device=a") is None


def test_on_refresh_sees_each_snapshot(tmp_path: Path) -> None:
    seen: list[int] = []
    registry = Registry([str(tmp_path)], on_refresh=lambda snap: seen.append(snap.generation))
    registry.refresh()
    assert seen == [1, 2]
    assert registry.generation == 2


def test_spec_dir_removed_and_recreated(tmp_path: Path) -> None:
    import shutil

    specs = tmp_path / "specs"
    specs.mkdir()
    write_spec(spec_with("a"), str(specs / "a.yaml"))
    with Registry([str(specs)], auto_refresh=True, debounce=0.05) as registry:
        assert registry.devices() == ["vendor.com/device=a"]
        shutil.rmtree(specs)
        wait_for(lambda: registry.devices() == [])
        specs.mkdir()
        write_spec(spec_with("b"), str(specs / "b.yaml"))
        wait_for(lambda: registry.devices() == ["vendor.com/device=b"])


def test_a_fifo_named_like_a_spec_is_reported_not_read(tmp_path: Path) -> None:
    # Opening a FIFO for reading waits for a writer: the scan, `gpu-cdi list` and the
    # plugin's start would hang on it.
    write(tmp_path, "a.yaml", device_spec("vendor.com/device", "a"))
    os.mkfifo(tmp_path / "fifo.yaml")
    began = time.monotonic()
    registry = Registry([str(tmp_path)])
    assert time.monotonic() - began < 1
    assert registry.devices() == ["vendor.com/device=a"]
    assert registry.errors() == {
        str(tmp_path / "fifo.yaml"): (
            f"{tmp_path / 'fifo.yaml'}: cannot read the file: not a regular file (a FIFO)",
        )
    }


def test_a_fifo_appearing_does_not_stall_auto_refresh_or_close(tmp_path: Path) -> None:
    with Registry([str(tmp_path)], auto_refresh=True, debounce=0.05) as registry:
        os.mkfifo(tmp_path / "fifo.yaml")
        wait_for(lambda: str(tmp_path / "fifo.yaml") in registry.errors())
        write_spec(spec_with("later"), str(tmp_path / "later.yaml"))
        wait_for(lambda: registry.devices() == ["vendor.com/device=later"])
        began = time.monotonic()
    assert time.monotonic() - began < 1  # close() did not wait for a stuck refresh


def test_no_inotify_instance_left_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cdi import inotify

    def refuse(self: inotify.Inotify) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(inotify.Inotify, "__init__", refuse)
    with pytest.raises(OSError) as caught:
        Registry([str(tmp_path)], auto_refresh=True)
    assert caught.value.strerror == (
        "cannot watch the spec dirs for changes: Too many open files (inotify instances are "
        "limited by /proc/sys/fs/inotify/max_user_instances)"
    )


def test_a_spec_dir_renamed_away_and_back_is_watched_again(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    with Registry([str(specs)], auto_refresh=True, debounce=0.05) as registry:
        os.rename(specs, tmp_path / "elsewhere")
        wait_for(lambda: registry.generation >= 2)
        write_spec(spec_with("gone"), str(tmp_path / "elsewhere" / "x.yaml"))
        time.sleep(0.3)
        assert registry.devices() == []  # the old dir is not watched under its new name
        specs.mkdir()
        write_spec(spec_with("back"), str(specs / "y.yaml"))
        wait_for(lambda: registry.devices() == ["vendor.com/device=back"])
