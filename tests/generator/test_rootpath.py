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


def test_one_pass_resolves_as_without_it(tmp_path: Path) -> None:
    """Inside `one_pass` a prefix resolved once is reused: every answer is the walk's own,
    whichever prefix came first, and the hops of a parent count against the child's limit."""
    (tmp_path / "usr/lib/x").mkdir(parents=True)
    (tmp_path / "usr/lib/x/libx.so.1").write_text("x")
    os.symlink("usr/lib", tmp_path / "lib")
    os.symlink("/lib/x", tmp_path / "usr/lib/y")
    os.symlink("../../../../..", tmp_path / "usr/lib/up")
    chain = tmp_path / "c0"
    chain.mkdir()
    for i in range(1, 40):  # c39 -> c38 -> ... -> c0: 39 hops, one short of the limit
        os.symlink(f"c{i - 1}", tmp_path / f"c{i}")
    os.symlink("/c39", tmp_path / "usr/lib/far")  # 40 hops; one more below it is too many
    (chain / "z").symlink_to("/usr")
    root = str(tmp_path)
    paths = [
        "/lib/y/libx.so.1",
        "/lib/y",
        "/lib/y/../x/./libx.so.1",
        "/lib/../lib/y/libx.so.1",
        "/usr/lib/up/lib/y",
        "/usr/lib/up/etc/passwd",
        "/lib/missing/..",
        "/lib/y/libx.so.1/x",
        "/usr/lib/far",
        "/usr/lib/far/z",
        "/c39/z",
        "/",
    ]
    alone = {path: rootpath.resolve(root, path) for path in paths}
    assert alone["/lib/y/libx.so.1"] == "/usr/lib/x/libx.so.1"
    assert alone["/usr/lib/up/lib/y"] == "/usr/lib/x"
    assert alone["/lib/missing/.."] is None
    assert alone["/usr/lib/far"] == "/c0"
    assert alone["/usr/lib/far/z"] is None  # the 41st link
    assert alone["/c39/z"] == "/usr"
    assert alone["/lib/y"] == "/usr/lib/x"
    for order in (paths, paths[::-1]):
        with rootpath.one_pass():
            assert {path: rootpath.resolve(root, path) for path in order} == alone
            # The same prefix again, and under another root, gives the same answers.
            assert {path: rootpath.resolve(root, path) for path in order} == alone
            assert rootpath.resolve(str(tmp_path / "usr"), "/lib/y") == "/lib/x"
    # Nothing is remembered after the pass: a change on disk is seen.
    os.remove(tmp_path / "usr/lib/y")
    with rootpath.one_pass():
        assert rootpath.resolve(root, "/lib/y") is None
    assert rootpath.resolve(root, "/lib/y") is None


def test_one_pass_is_its_threads_own(tmp_path: Path) -> None:
    """A pass remembers for the thread that runs it: another thread resolving meanwhile (a
    device plugin's, say) reads the disk, and its own pass does not end this one's."""
    import threading

    (tmp_path / "a").mkdir()
    os.symlink("a", tmp_path / "link")
    root = str(tmp_path)
    seen: list[str | None] = []

    def other() -> None:
        with rootpath.one_pass():
            seen.append(rootpath.resolve(root, "/link"))

    with rootpath.one_pass():
        assert rootpath.resolve(root, "/link") == "/a"
        os.remove(tmp_path / "link")
        os.symlink("b", tmp_path / "link")
        (tmp_path / "b").mkdir()
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert seen == ["/b"]
        assert rootpath.resolve(root, "/link") == "/a"  # this pass still remembers
    assert rootpath.resolve(root, "/link") == "/b"
