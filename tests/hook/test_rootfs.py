"""In-rootfs resolution: links mean what they would mean with the rootfs as /, never the host."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdi.hook import rootfs as rootfs_mod
from cdi.hook.errors import HookError
from cdi.hook.rootfs import NotFound, Rootfs
from tests.hook.helpers import make_host_sentinel, snapshot


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Rootfs, Path, Path]]:
    """(Rootfs, its directory, a host sentinel directory next to it)."""
    top = tmp_path / "rootfs"
    (top / "usr" / "lib" / "real").mkdir(parents=True)
    (top / "etc").mkdir()
    host = make_host_sentinel(tmp_path)
    with Rootfs(str(top)) as root:
        yield root, top, host


def real(root: Rootfs, path: str) -> str:
    """Host path of what `path` resolves to, read back through /proc for the assertion."""
    fd = root.resolve(path)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def test_absolute_link_resolves_inside_rootfs(tree: tuple[Rootfs, Path, Path]) -> None:
    root, top, host = tree
    (top / "usr/lib/x86_64-linux-gnu").symlink_to("/usr/lib/real")
    assert real(root, "/usr/lib/x86_64-linux-gnu") == str(top / "usr/lib/real")
    # A link to a host path means that path inside the rootfs, never the host's.
    (top / "usr/lib/evil").symlink_to(str(host / "etc"))
    first = "/" + str(host).strip("/").split("/")[0]  # the host's /tmp is not in the image
    with pytest.raises(NotFound, match=rf"\(in rootfs .*\): {first} does not exist"):
        root.resolve("/usr/lib/evil/shadow")


def test_dotdot_never_climbs_above_the_rootfs(tree: tuple[Rootfs, Path, Path]) -> None:
    root, top, _ = tree
    (top / "usr/lib/up").symlink_to("../../../../../../../../..")
    assert real(root, "/usr/lib/up") == str(top)
    assert real(root, "/../../../etc") == str(top / "etc")
    assert real(root, "/usr/lib/up/etc") == str(top / "etc")


def test_relative_link_escape_lands_inside(tree: tuple[Rootfs, Path, Path]) -> None:
    root, top, host = tree
    escape = "../" * 20 + str(host / "etc").lstrip("/")
    (top / "usr/lib/x86_64-linux-gnu").symlink_to(escape)
    root.write_file("/usr/lib/x86_64-linux-gnu/ld.so.conf", b"mine\n")
    assert (top / str(host / "etc/ld.so.conf").lstrip("/")).read_bytes() == b"mine\n"
    assert (host / "etc/ld.so.conf").read_text() == "include /etc/ld.so.conf.d/*.conf\n"


def test_link_loop_is_an_error(tree: tuple[Rootfs, Path, Path]) -> None:
    root, top, _ = tree
    (top / "a").symlink_to("b")
    (top / "b").symlink_to("/a")
    with pytest.raises(HookError, match="more than 40 symlinks"):
        root.resolve("/a/x")


def test_file_where_a_directory_is_expected(tree: tuple[Rootfs, Path, Path]) -> None:
    root, top, _ = tree
    (top / "usr/lib/x86_64-linux-gnu").write_text("not a dir")
    with pytest.raises(HookError, match="/usr/lib/x86_64-linux-gnu is not a directory"):
        root.symlink("libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so")


def test_dangling_link_in_parent_creates_inside(tree: tuple[Rootfs, Path, Path]) -> None:
    root, top, _ = tree
    (top / "usr/lib/x86_64-linux-gnu").symlink_to("/nonexistent/lib")
    assert root.symlink("libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so")
    assert os.readlink(top / "nonexistent/lib/libcuda.so") == "libcuda.so.1"


def test_symlink_is_ln_sf(tree: tuple[Rootfs, Path, Path]) -> None:
    root, top, host = tree
    link = top / "usr/lib/real/libcuda.so"
    assert root.symlink("libcuda.so.1", "/usr/lib/real/libcuda.so")
    assert not root.symlink("libcuda.so.1", "/usr/lib/real/libcuda.so")  # already right
    link.unlink()
    link.symlink_to(str(host / "lib/libcuda.so"))  # an image link pointing at the host
    assert root.symlink("libcuda.so.1", "/usr/lib/real/libcuda.so")
    assert os.readlink(link) == "libcuda.so.1"
    assert (host / "lib/libcuda.so").read_bytes() == b"host lib"
    link.unlink()
    link.write_bytes(b"stub")  # a regular file is replaced too
    assert root.symlink("libcuda.so.1", "/usr/lib/real/libcuda.so")
    assert os.readlink(link) == "libcuda.so.1"
    link.unlink()
    link.mkdir()
    with pytest.raises(HookError, match="exists and is a directory"):
        root.symlink("libcuda.so.1", "/usr/lib/real/libcuda.so")


def test_write_file_replaces_a_link_instead_of_following(tree: tuple[Rootfs, Path, Path]) -> None:
    root, top, host = tree
    (top / "etc/ld.so.cache").symlink_to(str(host / "etc/ld.so.cache"))
    root.write_file("/etc/ld.so.cache", b"new", 0o644)
    assert (top / "etc/ld.so.cache").read_bytes() == b"new"
    assert not (top / "etc/ld.so.cache").is_symlink()
    assert stat.S_IMODE((top / "etc/ld.so.cache").stat().st_mode) == 0o644
    assert (host / "etc/ld.so.cache").read_bytes() == b"host cache"


def test_read_file_refuses_fifos_and_follows_links_inside(tree: tuple[Rootfs, Path, Path]) -> None:
    root, top, host = tree
    os.mkfifo(top / "etc/ld.so.conf")
    with pytest.raises(HookError, match=r"/etc/ld\.so\.conf .*is a FIFO, not a regular file"):
        root.read_file("/etc/ld.so.conf")
    (top / "etc/params").symlink_to(str(host / "etc/shadow"))
    assert root.read_file("/etc/params") is None  # that path does not exist in the rootfs
    assert root.read_file("/missing") is None


def test_chmod_acts_inside(tree: tuple[Rootfs, Path, Path]) -> None:
    root, top, host = tree
    (top / "dev/dri").mkdir(parents=True, mode=0o700)
    root.chmod("/dev/dri", 0o755)
    assert stat.S_IMODE((top / "dev/dri").stat().st_mode) == 0o755
    (top / "dev/nvidia-caps").symlink_to(str(host / "dev/dri"))
    before = snapshot(host)
    with pytest.raises(NotFound):
        root.chmod("/dev/nvidia-caps", 0o777)
    assert snapshot(host) == before


def test_parent_dir_swapped_for_host_link_before_open(
    tree: tuple[Rootfs, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image (or a concurrent writer) replaces a checked directory right before use."""
    root, top, host = tree
    libdir = top / "usr/lib/x86_64-linux-gnu"
    libdir.mkdir()
    before = snapshot(host)

    def swap(name: str) -> None:
        if name == "x86_64-linux-gnu" and libdir.is_dir() and not libdir.is_symlink():
            libdir.rename(top / "usr/lib/moved")
            libdir.symlink_to(str(host / "lib"))

    monkeypatch.setattr(rootfs_mod, "step_hook", swap)
    root.symlink("libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so")
    assert snapshot(host) == before
    inside = top / str(host / "lib/libcuda.so").lstrip("/")
    assert os.readlink(inside) == "libcuda.so.1"


def test_parent_dir_swapped_after_it_was_opened(
    tree: tuple[Rootfs, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Swapped between resolving the directory and creating the entry: the held fd wins."""
    root, top, host = tree
    libdir = top / "usr/lib/x86_64-linux-gnu"
    libdir.mkdir()
    before = snapshot(host)

    def swap(name: str) -> None:
        if name in ("libcuda.so", "ld.so.cache") and not libdir.is_symlink():
            libdir.rename(top / f"usr/lib/moved-{name}")
            libdir.symlink_to(str(host / "lib"))

    monkeypatch.setattr(rootfs_mod, "step_hook", swap)
    root.symlink("libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so")
    assert os.readlink(top / "usr/lib/moved-libcuda.so/libcuda.so") == "libcuda.so.1"
    libdir.unlink()
    libdir.mkdir()
    with Rootfs(str(top)) as fresh:  # `root` holds the first directory for later calls
        fresh.write_file("/usr/lib/x86_64-linux-gnu/ld.so.cache", b"cache")
    assert (top / "usr/lib/moved-ld.so.cache/ld.so.cache").read_bytes() == b"cache"
    assert snapshot(host) == before


def test_resolved_directories_are_reused_until_something_is_replaced(
    tree: tuple[Rootfs, Path, Path],
) -> None:
    """Links of one directory walk it once; a replaced entry makes every path walk again."""
    root, top, _ = tree
    (top / "usr/lib/real/sub").mkdir()
    (top / "usr/lib/x86_64-linux-gnu").symlink_to("real")
    root.symlink("a", "/usr/lib/x86_64-linux-gnu/sub/one")
    # Swapped behind the hook's back: the directory already resolved is still used.
    (top / "usr/lib/x86_64-linux-gnu").unlink()
    (top / "usr/lib/other/sub").mkdir(parents=True)
    (top / "usr/lib/x86_64-linux-gnu").symlink_to("other")
    root.symlink("b", "/usr/lib/x86_64-linux-gnu/sub/two")
    assert sorted(os.listdir(top / "usr/lib/real/sub")) == ["one", "two"]
    # The hook itself replaces an entry (ln -sf over a link): walks start afresh.
    (top / "usr/lib/third/sub").mkdir(parents=True)
    root.symlink("third", "/usr/lib/x86_64-linux-gnu")
    root.symlink("c", "/usr/lib/x86_64-linux-gnu/sub/three")
    assert os.listdir(top / "usr/lib/third/sub") == ["three"]
