"""Hostile images: whatever links the rootfs holds, nothing outside it changes.

Each case builds a rootfs whose links aim at a sentinel "host" directory (absolute, relative,
dangling, swapped while the hook runs), runs the hook as a process the way runc does, and
compares a snapshot of the sentinel (type, mode, owner, mtime, inode, content of every entry)
before and after.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cdi.hook import ldconfig as ldconfig_mod
from cdi.hook.errors import HookError
from cdi.hook.rootfs import Rootfs
from tests.hook.helpers import (
    LIBDIR,
    Bundle,
    assert_one_line_error,
    hook_argv,
    make_bundle,
    make_host_sentinel,
    run_hook,
    snapshot,
)
from tests.require import need, need_root, need_tool

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


def profile_dir_to_host(b: Bundle, h: Path) -> None:
    (b.rootfs / "etc/nvidia").symlink_to(str(h / "etc"))


def by_path_dir_to_host(b: Bundle, h: Path) -> None:
    (b.rootfs / "dev/dri").mkdir(parents=True)
    (b.rootfs / "dev/dri/by-path").symlink_to(
        relative_escape(b.rootfs / "dev/dri/x", h / "dev/dri")
    )


def soname_dir_link_to_host(b: Bundle, h: Path) -> None:
    """A library directory ldconfig scans links to the host's: its links land in the image."""
    (b.rootfs / "etc/ld.so.conf").write_text(f"{h}/lib\n")
    (b.rootfs / "opt").mkdir()
    (b.rootfs / str(h).lstrip("/")).mkdir(parents=True)
    (b.rootfs / str(h / "lib").lstrip("/")).symlink_to("/opt")


LDCACHE = ["update-ldcache", "--folder", LIBDIR]
BY_PATH = [
    "create-symlinks",
    "--link-if-target",
    "../card1::/dev/dri/by-path/pci-0000:07:00.0-card",
]
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
    "profile dir link to host": (profile_dir_to_host, ["update-application-profile"], False),
    "by-path dir relative escape": (by_path_dir_to_host, BY_PATH, False),
    "scanned library dir link to host": (soname_dir_link_to_host, LDCACHE, True),
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
    # /dev is a link to a host file: inside the rootfs it leads nowhere, so there is no
    # /dev/dri to chmod (skipped, as nvidia-cdi-hook skips absent paths).
    proc = run_hook(bundle, "chmod", "--mode", "777", "--path", "/dev/dri")
    assert proc.returncode == 0, proc.stderr
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


# ---- images and bundles that must fail the start: one line naming the action and the path,
# quickly (nothing blocks, nothing grows), the host untouched.


def conf_is_fifo(b: Bundle, h: Path) -> None:
    os.mkfifo(b.rootfs / "etc/ld.so.conf")


def conf_is_zero_device(b: Bundle, h: Path) -> None:
    os.mknod(b.rootfs / "etc/ld.so.conf", stat.S_IFCHR | 0o666, os.makedev(1, 5))


def include_dev_zero(b: Bundle, h: Path) -> None:
    (b.rootfs / "dev").mkdir()
    os.mknod(b.rootfs / "dev/zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # as runc makes it
    (b.rootfs / "etc/ld.so.conf").write_text("/usr/local/lib\ninclude /dev/zero\n")


def glob_include_matches_fifo(b: Bundle, h: Path) -> None:
    (b.rootfs / "etc/ld.so.conf").write_text("include ld.so.conf.d/*.conf\n")
    (b.rootfs / "etc/ld.so.conf.d").mkdir()
    (b.rootfs / "etc/ld.so.conf.d/libc.conf").write_text("/usr/local/lib\n")
    os.mkfifo(b.rootfs / "etc/ld.so.conf.d/trap.conf")


def include_link_to_host_fifo(b: Bundle, h: Path) -> None:
    os.mkfifo(h / "fifo")  # the host's FIFO is never reached: the link means rootfs/<h>/fifo
    inside = b.rootfs / str(h).lstrip("/")
    inside.mkdir(parents=True)
    os.mkfifo(inside / "fifo")
    (b.rootfs / "etc/ld.so.conf").write_text(f"include {h}/fifo\n")


def conf_includes_itself(b: Bundle, h: Path) -> None:
    """Included twice per level, ldconfig doubles its work at each level until it runs out
    of file descriptors: 2^60 reads."""
    (b.rootfs / "etc/ld.so.conf").write_text("include /etc/ld.so.conf\ninclude ld.so.conf\n")


def includes_fan_out(b: Bundle, h: Path) -> None:
    """No cycle, but each of 12 files includes the next three times: 3^12 reads."""
    conf_d = b.rootfs / "etc/ld.so.conf.d"
    conf_d.mkdir()
    (b.rootfs / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/0.conf\n")
    for i in range(12):
        (conf_d / f"{i}.conf").write_text(f"include {i + 1}.conf\n" * 3)
    (conf_d / "12.conf").write_text("/usr/local/lib\n")


def config_json_is_fifo(b: Bundle, h: Path) -> None:
    (b.path / "config.json").unlink()
    os.mkfifo(b.path / "config.json")


def config_json_is_directory(b: Bundle, h: Path) -> None:
    (b.path / "config.json").unlink()
    (b.path / "config.json").mkdir()


def config_json_without_devices(b: Bundle, h: Path) -> None:
    (b.path / "config.json").write_text(json.dumps({"root": {"path": "rootfs"}}))


PROFILE = ["update-application-profile"]
# case -> (setup, hook arguments, what the one line must say besides the action)
FAILING: dict[str, tuple[Setup, list[str], list[str]]] = {
    "ld.so.conf is a FIFO": (conf_is_fifo, LDCACHE, ["/etc/ld.so.conf", "is a FIFO"]),
    "ld.so.conf is /dev/zero": (
        conf_is_zero_device,
        LDCACHE,
        ["/etc/ld.so.conf", "is a character device"],
    ),
    "include /dev/zero": (
        include_dev_zero,
        LDCACHE,
        ["/dev/zero", "is a character device", "included from /etc/ld.so.conf"],
    ),
    "include glob matches a FIFO": (
        glob_include_matches_fifo,
        LDCACHE,
        ["/etc/ld.so.conf.d/trap.conf", "is a FIFO", "included from /etc/ld.so.conf"],
    ),
    "include of a host FIFO path": (include_link_to_host_fifo, LDCACHE, ["/fifo", "is a FIFO"]),
    "ld.so.conf includes itself": (
        conf_includes_itself,
        LDCACHE,
        ["/etc/ld.so.conf", "includes itself (included from /etc/ld.so.conf)"],
    ),
    "includes fan out": (
        includes_fan_out,
        LDCACHE,
        ["/etc/ld.so.conf.d/", "more than 4096 file reads"],
    ),
    "bundle config.json is a FIFO": (
        config_json_is_fifo,
        LDCACHE,
        ["config.json", "is a FIFO, not a regular file"],
    ),
    "bundle config.json is a directory": (
        config_json_is_directory,
        LDCACHE,
        ["config.json", "is a directory, not a regular file"],
    ),
    "config.json lists no devices": (
        config_json_without_devices,
        PROFILE,
        ["config.json", "linux.devices missing"],
    ),
}


@pytest.mark.parametrize("case", list(FAILING))
def test_hostile_input_fails_the_start_in_one_line(tmp_path: Path, case: str) -> None:
    need_root()  # mknod, mkfifo under a root-owned rootfs, chroot
    setup, args, needles = FAILING[case]
    host = make_host_sentinel(tmp_path)
    bundle = make_bundle(tmp_path)
    setup(bundle, host)
    before = snapshot(host)
    rootfs_before = snapshot(bundle.rootfs)
    start = time.monotonic()
    proc = run_hook(bundle, *args)
    assert time.monotonic() - start < 5  # a FIFO or /dev/zero never blocks or feeds the hook
    assert_one_line_error(proc, f"{args[0]}:", *needles)
    assert snapshot(host) == before
    assert snapshot(bundle.rootfs) == rootfs_before  # refused before changing anything


def test_bundle_that_is_not_a_directory_is_named(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    state = json.dumps({"bundle": str(bundle.path / "config.json")}).encode()
    proc = run_hook(None, "create-symlinks", *LINKS, stdin=state)
    assert_one_line_error(proc, "create-symlinks:", "config.json/config.json", "Not a directory")


def test_magic_proc_link_is_named(tmp_path: Path) -> None:
    """/etc/ld.so.conf.d -> /proc/1/root/etc/ld.so.conf.d with the container's procfs mounted
    (as at hook time): the walk never follows it out; if it cannot read the link at all, the
    line says which link instead of a bare "Permission denied"."""
    need_root()
    unshare = need_tool("unshare")
    bundle = make_bundle(tmp_path)
    (bundle.rootfs / "proc").mkdir()
    (bundle.rootfs / "etc/ld.so.conf.d").symlink_to("/proc/1/root/etc/ld.so.conf.d")
    host_before = sorted(os.listdir("/etc/ld.so.conf.d"))
    state = tmp_path / "state.json"
    state.write_bytes(bundle.state)
    hook = " ".join(hook_argv()) + f" update-ldcache --folder {LIBDIR}"
    script = f"mount -t proc proc {bundle.rootfs}/proc && {hook} < {state}"
    proc = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    assert sorted(os.listdir("/etc/ld.so.conf.d")) == host_before
    if proc.returncode:
        assert_one_line_error(
            proc, "update-ldcache:", "/etc/ld.so.conf.d", "/proc/1/root is a link that cannot"
        )
    else:  # followed as the rootfs's own /etc/ld.so.conf.d
        assert (bundle.rootfs / "etc/ld.so.conf.d/00-nvcr-gpu-cdi.conf").is_file()


LIMITS_PROBE = r"""
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>
static long lim(int r) { struct rlimit l; getrlimit(r, &l); return (long)l.rlim_max; }
int main(void) {
    fprintf(stderr, "as=%ld cpu=%ld nofile=%ld fsize=%ld core=%ld uid=%d gid=%d groups=%d\n",
            lim(RLIMIT_AS), lim(RLIMIT_CPU), lim(RLIMIT_NOFILE), lim(RLIMIT_FSIZE),
            lim(RLIMIT_CORE), (int)getuid(), (int)getgid(), getgroups(0, NULL));
    return 3;
}
"""


def test_ldconfig_runs_bounded_and_unprivileged(tmp_path: Path) -> None:
    """A static stand-in for ldconfig reports the limits it was started with."""
    need_root()
    gcc = need_tool("gcc")
    src, probe = tmp_path / "probe.c", tmp_path / "probe"
    src.write_text(LIMITS_PROBE)
    built = subprocess.run([gcc, "-static", "-o", str(probe), str(src)], capture_output=True)
    need(built.returncode == 0, f"no static libc for gcc: {built.stderr.decode()[-200:]}")
    bundle = make_bundle(tmp_path)
    proc = run_hook(bundle, "update-ldcache", "--ldconfig-path", str(probe))
    m = ldconfig_mod
    assert_one_line_error(
        proc,
        "update-ldcache:",
        f"{probe} exited with 3",
        f"as={m.ADDRESS_SPACE_BYTES} cpu={m.CPU_SECONDS} nofile={m.OPEN_FILES}",
        f"fsize={m.MAX_CACHE_BYTES} core=0 uid=65534 gid=65534 groups=0",
    )


def test_ldconfig_reading_dev_zero_is_stopped_by_its_limits(tmp_path: Path) -> None:
    """Past the configuration check (a swap after it, say), ldconfig reading /dev/zero as a
    config file ends within its address-space bound instead of growing for 20 s."""
    need_root()
    bundle = make_bundle(tmp_path)
    include_dev_zero(bundle, tmp_path)
    start = time.monotonic()
    with Rootfs(str(bundle.rootfs)) as root:
        try:
            ldconfig_mod.run_ldconfig(root, "/sbin/ldconfig")
        except HookError as err:
            assert "/etc/ld.so.cache" in str(err)
    assert time.monotonic() - start < ldconfig_mod.TIMEOUT_SECONDS / 4
    assert not any(p.name.startswith(".gpu-cdi") for p in bundle.rootfs.iterdir())
