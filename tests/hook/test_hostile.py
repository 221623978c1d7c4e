"""Hostile images: whatever links the rootfs holds, nothing outside it changes.

Each case builds a rootfs whose links aim at a sentinel "host" directory (absolute, relative,
dangling, swapped while the hook runs), runs the hook as a process the way runc does, and
compares a snapshot of the sentinel (type, mode, owner, mtime, inode, content of every entry)
before and after.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hook.helpers import (
    LIBDIR,
    Bundle,
    assert_one_line_error,
    make_bundle,
    make_host_sentinel,
    run_hook,
    snapshot,
)
from tests.require import need_root

LINKS = [
    "--link", f"libcuda.so.550.163.01::{LIBDIR}/libcuda.so.1",
    "--link", f"libcuda.so.1::{LIBDIR}/libcuda.so",
]  # fmt: skip
LIB = LIBDIR.lstrip("/")


def relative_escape(start: Path, host: Path) -> str:
    """A relative link target from `start`'s directory that would reach `host` on the host."""
    return "../" * (len(start.parent.parts) + 5) + str(host).lstrip("/")


def replace_with_link(path: Path, target: str) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    path.symlink_to(target)


Setup = Callable[[Bundle, Path], None]


def libdir_to_host(b: Bundle, h: Path) -> None:
    replace_with_link(b.rootfs / LIB, str(h / "lib"))


def libdir_relative_escape(b: Bundle, h: Path) -> None:
    replace_with_link(b.rootfs / LIB, relative_escape(b.rootfs / LIB, h / "lib"))


def library_link_to_host_file(b: Bundle, h: Path) -> None:
    (b.rootfs / LIB / "libcuda.so").symlink_to(str(h / "lib/libcuda.so"))


def dangling_libdir(b: Bundle, h: Path) -> None:
    replace_with_link(b.rootfs / LIB, "/nowhere/lib")


def etc_to_host(b: Bundle, h: Path) -> None:
    replace_with_link(b.rootfs / "etc", str(h / "etc"))


def conf_d_relative_escape(b: Bundle, h: Path) -> None:
    conf_d = b.rootfs / "etc/ld.so.conf.d"
    conf_d.symlink_to(relative_escape(conf_d, h / "etc/ld.so.conf.d"))


def cache_and_conf_to_host(b: Bundle, h: Path) -> None:
    (b.rootfs / "etc/ld.so.cache").symlink_to(str(h / "etc/ld.so.cache"))
    (b.rootfs / "etc/ld.so.conf").symlink_to(relative_escape(b.rootfs / "etc/x", h / "etc/x"))


def compat_dir_to_host(b: Bundle, h: Path) -> None:
    (b.rootfs / "usr/local/cuda").mkdir(parents=True)
    (b.rootfs / "usr/local/cuda/compat").symlink_to(str(h / "lib"))


LDCACHE = ["update-ldcache", "--folder", LIBDIR]
# case -> (hostile setup, hook arguments, needs root)
CASES: dict[str, tuple[Setup, list[str], bool]] = {
    "libdir absolute link to host": (libdir_to_host, ["create-symlinks", *LINKS], False),
    "libdir relative escape": (libdir_relative_escape, ["create-symlinks", *LINKS], False),
    "library link to host file": (library_link_to_host_file, ["create-symlinks", *LINKS], False),
    "dangling libdir link": (dangling_libdir, ["create-symlinks", *LINKS], False),
    "etc absolute link to host": (etc_to_host, ["create-symlinks", *LINKS, *LDCACHE], True),
    "ld.so.conf.d relative escape": (conf_d_relative_escape, LDCACHE, True),
    "ld.so.cache and ld.so.conf links to host": (cache_and_conf_to_host, LDCACHE, True),
    "compat dir link to host": (
        compat_dir_to_host,
        ["enable-cuda-compat", "--host-driver-version", "550.163.01"],
        False,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_rootfs_cannot_touch_host(tmp_path: Path, case: str) -> None:
    setup, args, needs_root = CASES[case]
    if needs_root:
        need_root()
    host = make_host_sentinel(tmp_path)
    (host / "lib" / "libcuda.so.999.1.1").write_bytes(b"lure for enable-cuda-compat")
    bundle = make_bundle(tmp_path)
    setup(bundle, host)
    before = snapshot(host)
    proc = run_hook(bundle, *args)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(host) == before


def test_file_where_directory_expected_fails_cleanly(tmp_path: Path) -> None:
    host = make_host_sentinel(tmp_path)
    bundle = make_bundle(tmp_path)
    (bundle.rootfs / "usr/lib").joinpath("x86_64-linux-gnu").rmdir()
    (bundle.rootfs / LIB).write_text("file")
    (bundle.rootfs / "dev").symlink_to(str(host / "etc/shadow"))
    before = snapshot(host)
    proc = run_hook(bundle, "create-symlinks", *LINKS)
    assert_one_line_error(proc, f"{LIBDIR} is not a directory")
    proc = run_hook(bundle, "chmod", "--mode", "777", "--path", "/dev/dri")
    assert_one_line_error(proc, "chmod: /dev/dri", "does not exist")
    assert snapshot(host) == before


def test_link_to_real_host_etc_stays_in_rootfs(tmp_path: Path) -> None:
    """The literal attack: usr/lib/x86_64-linux-gnu -> /etc."""
    bundle = make_bundle(tmp_path)
    replace_with_link(bundle.rootfs / LIB, "/etc")
    assert not os.path.lexists("/etc/libcuda.so")
    try:
        proc = run_hook(bundle, "create-symlinks", *LINKS)
        assert proc.returncode == 0, proc.stderr
        assert not os.path.lexists("/etc/libcuda.so")
        assert not os.path.lexists("/etc/libcuda.so.1")
        assert os.readlink(bundle.rootfs / "etc/libcuda.so") == "libcuda.so.1"
    finally:
        for name in ("libcuda.so", "libcuda.so.1"):  # only if the hook escaped
            if os.path.islink(f"/etc/{name}"):
                os.unlink(f"/etc/{name}")


def test_links_flipped_while_hooks_run(tmp_path: Path) -> None:
    """A concurrent writer flips the library dir between a real dir and a host link."""
    need_root()
    host = make_host_sentinel(tmp_path)
    bundle = make_bundle(tmp_path)
    libdir = bundle.rootfs / LIB
    parked = bundle.rootfs / "usr/lib/parked"
    before = snapshot(host)
    stop = threading.Event()
    flips = 0

    def flip() -> None:
        nonlocal flips
        while not stop.is_set():
            try:
                os.rename(libdir, parked)
                os.symlink(str(host / "lib"), libdir)
                os.unlink(libdir)
                os.rename(parked, libdir)
            except OSError:
                pass  # the hook made or moved something in between: keep flipping
            flips += 1

    thread = threading.Thread(target=flip)
    thread.start()
    try:
        for _ in range(25):
            proc = run_hook(bundle, "create-symlinks", *LINKS, "update-ldcache", "--folder", LIBDIR)
            if proc.returncode:
                assert_one_line_error(proc, str(bundle.rootfs))
    finally:
        stop.set()
        thread.join()
    assert flips > 25
    assert snapshot(host) == before
