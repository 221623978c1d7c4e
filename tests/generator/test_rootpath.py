"""Resolving paths inside a driver root: symlinks never leave it."""

from __future__ import annotations

import os
from pathlib import Path

from cdi.nvidia import rootpath


def test_relative_and_absolute_links_stay_inside(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/libx.so.1.0").write_text("x")
    os.symlink("usr/lib", tmp_path / "lib")
    os.symlink("/usr/lib/libx.so.1.0", tmp_path / "usr/lib/libx.so.1")
    os.symlink("../../../../../etc/passwd", tmp_path / "usr/lib/escape")
    root = str(tmp_path)
    assert rootpath.resolve(root, "/lib/libx.so.1") == "/usr/lib/libx.so.1.0"
    # `..` applies to the resolved path: /lib is /usr/lib, so /lib/.. is /usr.
    assert rootpath.resolve(root, "/lib/../lib/./libx.so.1") == "/usr/lib/libx.so.1.0"
    # `..` above the root stays at the root, as in a chroot: /etc/passwd of the root, missing.
    assert rootpath.resolve(root, "/usr/lib/escape") is None
    assert rootpath.resolve(root, "/lib/missing") is None
    assert rootpath.host(root, "/usr/lib") == f"{root}/usr/lib"
    assert rootpath.host("/", "/usr/lib") == "/usr/lib"


def test_symlink_loops_end(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    assert rootpath.resolve(str(tmp_path), "/a") is None
