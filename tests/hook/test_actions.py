"""Each action on a temporary rootfs, run as the runtime runs it: a process, state on stdin."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from cdi.hook import ldconfig as ldconfig_mod
from cdi.hook.actions import COMPAT_CONF, LDCACHE_CONF, SYSTEM_DIRS_CONF
from cdi.hook.errors import HookError
from cdi.hook.rootfs import Rootfs
from tests.hook.helpers import (
    LIBDIR,
    ONE_GPU,
    assert_one_line_error,
    make_bundle,
    make_host_sentinel,
    oci_device,
    run_hook,
    snapshot,
)
from tests.require import need_root, need_tool

VERSION = "550.163.01"
LIBS = {"libcuda": "libcuda.so.1", "libnvidia-ml": "libnvidia-ml.so.1"}


@pytest.fixture(scope="session")
def elf_libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny real shared objects with the driver's SONAMEs (ldconfig reads them)."""
    gcc = need_tool("gcc")
    out = tmp_path_factory.mktemp("elf")
    src = out / "empty.c"
    src.write_text("int gpu_cdi_test_symbol;\n")
    libs: dict[str, Path] = {}
    extra = [("compat-libcuda", "libcuda.so.1"), ("egl-gbm", "libnvidia-egl-gbm.so.1")]
    for name, soname in [*LIBS.items(), *extra]:
        lib = out / f"{name}.so"
        cmd = [gcc, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(lib), str(src)]
        subprocess.run(cmd, check=True, capture_output=True)
        libs[name] = lib
    return libs


def install_driver(rootfs: Path, libs: dict[str, Path]) -> None:
    """Versioned libraries as CDI mounts put them: the files only, no .so.1 links."""
    for name in LIBS:
        (rootfs / LIBDIR.lstrip("/") / f"{name}.so.{VERSION}").write_bytes(libs[name].read_bytes())


def ldconfig_p(rootfs: Path, cache: Path | None = None) -> str:
    """`ldconfig -p` of the rootfs's cache, as `ldconfig -p` inside the container prints it."""
    cache = cache or rootfs / "etc/ld.so.cache"
    out = subprocess.run(["/sbin/ldconfig", "-p", "-C", str(cache)], capture_output=True)
    return out.stdout.decode()


LINKS = [
    "--link", f"libcuda.so.{VERSION}::{LIBDIR}/libcuda.so.1",
    "--link", f"libcuda.so.1::{LIBDIR}/libcuda.so",
    "--link", f"libnvidia-ml.so.{VERSION}::{LIBDIR}/libnvidia-ml.so.1",
]  # fmt: skip


def test_create_symlinks_makes_links_and_parents(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    by_path = "/dev/dri/by-path/pci-0000:07:00.0-card"
    proc = run_hook(bundle, "create-symlinks", *LINKS, "--link", f"../card1::{by_path}")
    assert proc.returncode == 0, proc.stderr
    lib = bundle.rootfs / LIBDIR.lstrip("/")
    assert os.readlink(lib / "libcuda.so.1") == f"libcuda.so.{VERSION}"
    assert os.readlink(lib / "libcuda.so") == "libcuda.so.1"
    assert os.readlink(bundle.rootfs / by_path.lstrip("/")) == "../card1"
    # Running again (a restarted container) changes nothing and succeeds.
    assert run_hook(bundle, "create-symlinks", *LINKS).returncode == 0


def test_link_if_target_makes_only_links_of_the_containers_device_nodes(tmp_path: Path) -> None:
    """All GPUs' DRM by-path links in one hook: the container gets those of the nodes its
    config.json lists (the runtime's word, not whatever sits in the rootfs's /dev)."""
    bundle = make_bundle(tmp_path)  # GPU 0: /dev/dri/card1 and renderD128
    dri = bundle.rootfs / "dev/dri"
    dri.mkdir(parents=True)
    (dri / "card2").write_text("")  # in the image's /dev, not given to the container
    by_path = "/dev/dri/by-path/pci-0000:{}:00.0-{}"
    proc = run_hook(
        bundle,
        "create-symlinks",
        "--link-if-target", f"../card1::{by_path.format('07', 'card')}",
        "--link-if-target", f"../renderD128::{by_path.format('07', 'render')}",
        "--link-if-target", f"../card2::{by_path.format('0f', 'card')}",
        "--link-if-target", f"/dev/dri/card1::{by_path.format('aa', 'card')}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(dri / "by-path")) == [
        "pci-0000:07:00.0-card",
        "pci-0000:07:00.0-render",
        "pci-0000:aa:00.0-card",
    ]
    assert os.readlink(dri / "by-path/pci-0000:07:00.0-card") == "../card1"


def test_link_if_target_needs_the_device_list(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, devices=None)
    proc = run_hook(bundle, "create-symlinks", "--link-if-target", "../card1::/dev/dri/by-path/x")
    assert_one_line_error(
        proc, "create-symlinks:", str(bundle.path / "config.json"), "linux.devices missing"
    )
    # Plain links need no device list.
    assert run_hook(bundle, "create-symlinks", *LINKS).returncode == 0


def test_chained_one_gpu_set_builds_a_working_cache(
    tmp_path: Path, elf_libs: dict[str, Path]
) -> None:
    need_root()  # chroot and the drop to uid 65534 for ldconfig
    bundle = make_bundle(tmp_path)
    install_driver(bundle.rootfs, elf_libs)
    # Mounted like the driver's files, with no create-symlinks link for its SONAME: ldconfig's
    # rule makes libnvidia-egl-gbm.so.1 (nvidia-cdi-hook's root ldconfig does the same).
    gbm = bundle.rootfs / LIBDIR.lstrip("/") / "libnvidia-egl-gbm.so.1.1.1"
    gbm.write_bytes(elf_libs["egl-gbm"].read_bytes())
    proc = run_hook(
        bundle,
        "create-symlinks", *LINKS,
        "enable-cuda-compat", f"--host-driver-version={VERSION}",
        "update-ldcache", "--folder", LIBDIR, "--folder", f"{LIBDIR}/vdpau",
        "disable-device-node-modification",
        "update-application-profile",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    listing = ldconfig_p(bundle.rootfs)
    assert f"libcuda.so.1 (libc6,x86-64) => {LIBDIR}/libcuda.so.1" in listing
    assert f"libnvidia-ml.so.1 (libc6,x86-64) => {LIBDIR}/libnvidia-ml.so.1" in listing
    assert f"libnvidia-egl-gbm.so.1 (libc6,x86-64) => {LIBDIR}/libnvidia-egl-gbm.so.1" in listing
    assert os.readlink(gbm.with_name("libnvidia-egl-gbm.so.1")) == gbm.name
    etc = bundle.rootfs / "etc"
    assert (etc / "ld.so.conf").read_text() == "include /etc/ld.so.conf.d/*.conf\n"
    conf = bundle.rootfs / LDCACHE_CONF.lstrip("/")
    assert conf.read_text() == f"{LIBDIR}\n{LIBDIR}/vdpau\n"
    # Not a Debian image: the loader's default directories, for the host's ldconfig.
    system = (bundle.rootfs / SYSTEM_DIRS_CONF.lstrip("/")).read_text().split()
    assert system[:4] == ["/lib", "/usr/lib", "/lib64", "/usr/lib64"]
    cache = (etc / "ld.so.cache").stat()
    assert (cache.st_uid, stat.S_IMODE(cache.st_mode)) == (0, 0o644)
    assert not (bundle.rootfs / COMPAT_CONF.lstrip("/")).exists()
    # No scratch directory or temp file is left in the container.
    assert sorted(os.listdir(bundle.rootfs)) == ["etc", "usr"]
    assert sorted(os.listdir(etc)) == ["ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nvidia"]


def test_folders_the_image_configures_are_not_repeated(
    tmp_path: Path, elf_libs: dict[str, Path]
) -> None:
    """A Debian image lists the multiarch dir itself: only vdpau is added, as nvidia does."""
    need_root()
    bundle = make_bundle(tmp_path)
    install_driver(bundle.rootfs, elf_libs)
    etc = bundle.rootfs / "etc"
    (etc / "debian_version").write_text("12.8\n")
    (etc / "ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (etc / "ld.so.conf.d").mkdir()
    (etc / "ld.so.conf.d/x86_64-linux-gnu.conf").write_text(f"# multiarch\n{LIBDIR}/\n")
    proc = run_hook(bundle, "update-ldcache", "--folder", LIBDIR, "--folder", f"{LIBDIR}/vdpau")
    assert proc.returncode == 0, proc.stderr
    assert (bundle.rootfs / LDCACHE_CONF.lstrip("/")).read_text() == f"{LIBDIR}/vdpau\n"
    system = (bundle.rootfs / SYSTEM_DIRS_CONF.lstrip("/")).read_text().split()
    assert system == ["/lib/x86_64-linux-gnu", f"{LIBDIR}", "/lib", "/usr/lib"]
    # Run again (a restarted container): our own drop-in does not count as the image's.
    proc = run_hook(bundle, "update-ldcache", "--folder", f"{LIBDIR}/nvidia")
    assert proc.returncode == 0, proc.stderr
    assert (bundle.rootfs / LDCACHE_CONF.lstrip("/")).read_text() == f"{LIBDIR}/nvidia\n"


def test_musl_image_gets_the_folders_in_its_path_file(tmp_path: Path) -> None:
    need_root()
    bundle = make_bundle(tmp_path)
    (bundle.rootfs / "etc/alpine-release").write_text("3.21.0\n")
    path_file = bundle.rootfs / f"etc/ld-musl-{os.uname().machine}.path"
    path_file.write_text("/opt/lib\n")
    proc = run_hook(bundle, "update-ldcache", "--folder", LIBDIR)
    assert proc.returncode == 0, proc.stderr
    lines = path_file.read_text().split()
    assert lines[:3] == ["/opt/lib", LIBDIR, "/lib"]


def test_existing_ld_so_conf_is_kept(tmp_path: Path, elf_libs: dict[str, Path]) -> None:
    need_root()
    bundle = make_bundle(tmp_path)
    install_driver(bundle.rootfs, elf_libs)
    conf = "# image's own\ninclude /etc/ld.so.conf.d/*.conf\n"
    (bundle.rootfs / "etc/ld.so.conf").write_text(conf)
    proc = run_hook(bundle, "create-symlinks", *LINKS, "update-ldcache", "--folder", LIBDIR)
    assert proc.returncode == 0, proc.stderr
    assert (bundle.rootfs / "etc/ld.so.conf").read_text() == conf
    assert f"=> {LIBDIR}/libnvidia-ml.so.1" in ldconfig_p(bundle.rootfs)


@pytest.mark.parametrize(
    ("compat_versions", "used"),
    [(["560.35.03"], True), (["550.54.14"], False), ([], False), (["560.1", "570.1"], False)],
)
def test_enable_cuda_compat_only_when_newer(
    tmp_path: Path, elf_libs: dict[str, Path], compat_versions: list[str], used: bool
) -> None:
    """As nvidia-cdi-hook: exactly one compat libcuda, newer than the driver; the drop-in names
    the compat directory's real path (/usr/local/cuda is usually a link)."""
    need_root()
    bundle = make_bundle(tmp_path)
    install_driver(bundle.rootfs, elf_libs)
    (bundle.rootfs / "etc/ld.so.cache").write_bytes(b"")  # the image's own cache
    compat = bundle.rootfs / "usr/local/cuda-12.8/compat"
    compat.mkdir(parents=True)
    (bundle.rootfs / "usr/local/cuda").symlink_to("cuda-12.8")
    for version in compat_versions:
        lib = compat / f"libcuda.so.{version}"
        lib.write_bytes(elf_libs["compat-libcuda"].read_bytes())
        (compat / "libcuda.so.1").unlink(missing_ok=True)
        (compat / "libcuda.so.1").symlink_to(lib.name)
    proc = run_hook(
        bundle,
        "create-symlinks", *LINKS,
        "enable-cuda-compat", "--host-driver-version", VERSION,
        "update-ldcache", "--folder", LIBDIR,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    conf = bundle.rootfs / COMPAT_CONF.lstrip("/")
    assert conf.exists() == used
    listing = ldconfig_p(bundle.rootfs)
    real = "/usr/local/cuda-12.8/compat"
    if used:
        assert conf.read_text() == f"{real}\n"
        assert f"libcuda.so.1 (libc6,x86-64) => {real}/libcuda.so.1" in listing
    else:
        assert real not in listing


def test_enable_cuda_compat_needs_the_images_ld_cache(
    tmp_path: Path, elf_libs: dict[str, Path]
) -> None:
    bundle = make_bundle(tmp_path)
    compat = bundle.rootfs / "usr/local/cuda/compat"
    compat.mkdir(parents=True)
    (compat / "libcuda.so.560.35.03").write_bytes(elf_libs["compat-libcuda"].read_bytes())
    assert run_hook(bundle, "enable-cuda-compat", "--host-driver-version", VERSION).returncode == 0
    assert not (bundle.rootfs / COMPAT_CONF.lstrip("/")).exists()


def test_ldconfig_that_fails_is_reported(tmp_path: Path) -> None:
    need_root()
    bundle = make_bundle(tmp_path)
    # A dynamically linked program cannot start inside the rootfs (no loader there): exit 127.
    proc = run_hook(bundle, "update-ldcache", "--ldconfig-path", "/bin/true")
    assert_one_line_error(proc, "update-ldcache", "/etc/ld.so.cache", "/bin/true", "exited with")
    assert not any(p.name.startswith(".gpu-cdi") for p in bundle.rootfs.iterdir())


def test_missing_ldconfig_is_named(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    proc = run_hook(bundle, "update-ldcache", "--ldconfig-path", "/nonexistent/ldconfig")
    assert_one_line_error(proc, "update-ldcache", "/nonexistent/ldconfig", "No such file")


def test_ldconfig_blocked_on_a_planted_fifo_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_root()
    bundle = make_bundle(tmp_path)
    (bundle.rootfs / "etc/ld.so.conf").write_text("include /etc/trap.conf\n")
    os.mkfifo(bundle.rootfs / "etc/trap.conf")
    monkeypatch.setattr(ldconfig_mod, "TIMEOUT_SECONDS", 1.0)
    with Rootfs(str(bundle.rootfs)) as root, pytest.raises(HookError, match="did not finish"):
        ldconfig_mod.run_ldconfig(root, "/sbin/ldconfig")
    assert not any(p.name.startswith(".gpu-cdi") for p in bundle.rootfs.iterdir())


def test_chmod_action(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    for name in ("dri", "nvidia-caps"):
        (bundle.rootfs / "dev" / name).mkdir(parents=True, mode=0o700)
    proc = run_hook(
        bundle,
        "chmod", "--mode", "755", "--path", "/dev/dri", "--path=/dev/nvidia-caps",
        "--path", "/dev/absent",  # as nvidia-cdi-hook: a path the container lacks is skipped
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for name in ("dri", "nvidia-caps"):
        assert stat.S_IMODE((bundle.rootfs / "dev" / name).stat().st_mode) == 0o755
    assert not (bundle.rootfs / "dev/absent").exists()


PROFILE = "etc/nvidia/nvidia-application-profiles-rc.d/10-container.conf"


@pytest.mark.parametrize(
    ("devices", "mask"),
    [
        (ONE_GPU, 0x1),
        (
            [
                oci_device("/dev/nvidia3", 195, 3),
                oci_device("/dev/nvidia7", 195, 7),
                oci_device("/dev/nvidiactl", 195, 255),
                oci_device("/dev/nvidia-caps/nvidia-cap21", 508, 21),
                oci_device("/dev/nvidia64", 195, 64),  # beyond the 64-bit mask: dropped
                {"path": "/dev/nvidia5", "type": "b", "major": 195, "minor": 5},  # not a char
                oci_device("/dev/sub/nvidia6", 195, 6),  # not directly in /dev
            ],
            0x88,
        ),
        ([oci_device("/dev/nvidiactl", 195, 255)], None),  # no GPU: nothing written
    ],
)
def test_application_profile_masks_the_containers_gpus(
    tmp_path: Path, devices: list[dict[str, object]], mask: int | None
) -> None:
    bundle = make_bundle(tmp_path, devices=devices)
    assert run_hook(bundle, "update-application-profile").returncode == 0
    profile = bundle.rootfs / PROFILE
    if mask is None:
        assert not (bundle.rootfs / "etc/nvidia").exists()
        return
    assert profile.read_text() == (
        '{"profiles":[{"name":"_container_","settings":["EGLVisibleDGPUDevices",'
        f'{mask:#x}]}}],"rules":[{{"pattern":[],"profile":"_container_"}}]}}'
    )
    # The modes nvidia-cdi-hook gives them.
    assert stat.S_IMODE(profile.stat().st_mode) == 0o444
    for folder in (profile.parent, profile.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o555


def test_application_profile_without_device_list_fails(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, devices=None)
    proc = run_hook(bundle, "update-application-profile")
    assert_one_line_error(
        proc, "update-application-profile:", f"{bundle.path}/config.json", "linux.devices"
    )
    assert not (bundle.rootfs / "etc/nvidia").exists()


PARAMS = "proc/driver/nvidia/params"
PARAMS_TEXT = "ResmanDebugLevel: 4294967295\nModifyDeviceFiles: 1\nDeviceFileUID: 0\n"


def test_device_node_modification_without_driver_is_a_no_op(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    before = snapshot(bundle.rootfs)
    assert run_hook(bundle, "disable-device-node-modification").returncode == 0
    assert snapshot(bundle.rootfs) == before


def test_device_node_modification_overmounts_params(tmp_path: Path) -> None:
    need_root()
    unshare = need_tool("unshare")
    bundle = make_bundle(tmp_path)
    params = bundle.rootfs / PARAMS
    params.parent.mkdir(parents=True)
    params.write_text(PARAMS_TEXT)
    state = tmp_path / "state.json"
    state.write_bytes(bundle.state)
    from tests.hook.helpers import hook_argv

    hook = " ".join(hook_argv()) + " disable-device-node-modification"
    # A private mount namespace stands in for the container's, where runc runs the hook.
    # Read-only as nvidia-cdi-hook's (root in a container could write a 0444 file otherwise).
    write = f"(echo 'ModifyDeviceFiles: 1' > {params}) 2>/dev/null && echo writable || echo ro"
    script = f"{hook} < {state} && cat {params} && stat -c %a {params} && {write}"
    out = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    seen = out.stdout.decode()
    assert seen == PARAMS_TEXT.replace("ModifyDeviceFiles: 1", "ModifyDeviceFiles: 0") + "444\nro\n"
    assert params.read_text() == PARAMS_TEXT  # the file itself and the host view are unchanged
    assert str(params) not in Path("/proc/self/mountinfo").read_text()


def test_device_node_modification_already_off_mounts_nothing(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    params = bundle.rootfs / PARAMS
    params.parent.mkdir(parents=True)
    params.write_text(PARAMS_TEXT.replace(": 1", ": 0"))
    # Outside any private namespace: if it tried to mount, it would show up on the host.
    assert run_hook(bundle, "disable-device-node-modification").returncode == 0
    assert str(params) not in Path("/proc/self/mountinfo").read_text()


def test_host_untouched_by_hostile_etc(tmp_path: Path, elf_libs: dict[str, Path]) -> None:
    need_root()
    host = make_host_sentinel(tmp_path)
    bundle = make_bundle(tmp_path)
    install_driver(bundle.rootfs, elf_libs)
    (bundle.rootfs / "etc").rmdir()
    (bundle.rootfs / "etc").symlink_to(str(host / "etc"))
    before = snapshot(host)
    proc = run_hook(bundle, "create-symlinks", *LINKS, "update-ldcache", "--folder", LIBDIR)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(host) == before
    # The image said /etc is <host>/etc: that is a directory inside the rootfs.
    inside = bundle.rootfs / str(host / "etc").lstrip("/")
    assert (inside / LDCACHE_CONF.removeprefix("/etc/")).read_text() == f"{LIBDIR}\n"
    assert f"=> {LIBDIR}/libcuda.so.1" in ldconfig_p(bundle.rootfs, inside / "ld.so.cache")


def test_ldconfig_real_is_preferred(tmp_path: Path) -> None:
    """Ubuntu's /sbin/ldconfig is a script around /sbin/ldconfig.real: .real is run, as
    nvidia-cdi-hook does (the script would run the image's /bin/sh in the chroot)."""
    need_root()
    bundle = make_bundle(tmp_path)
    script = tmp_path / "ldconfig"
    script.write_text("#!/bin/sh\nexit 7\n")
    script.chmod(0o755)
    real = tmp_path / "ldconfig.real"
    real.write_bytes(Path("/sbin/ldconfig").read_bytes())
    real.chmod(0o755)
    proc = run_hook(bundle, "update-ldcache", "--folder", LIBDIR, "--ldconfig-path", str(script))
    assert proc.returncode == 0, proc.stderr
    real.unlink()
    proc = run_hook(bundle, "update-ldcache", "--folder", LIBDIR, "--ldconfig-path", str(script))
    assert_one_line_error(proc, "update-ldcache:", f"ldconfig {script} exited with")


def test_failure_while_ldconfig_runs_leaves_nothing_behind(tmp_path: Path) -> None:
    """ldconfig runs while the later actions do; one of them failing stops it, and neither
    its scratch directory nor a cache is left in the container."""
    need_root()
    bundle = make_bundle(tmp_path)
    (bundle.rootfs / "dev").write_text("a file where the image should have a directory")
    proc = run_hook(
        bundle,
        "update-ldcache", "--folder", LIBDIR,
        "chmod", "--mode", "755", "--path", "/dev/dri",
    )  # fmt: skip
    assert_one_line_error(proc, "chmod: /dev/dri", "/dev is not a directory")
    assert not any(p.name.startswith(".gpu-cdi") for p in bundle.rootfs.iterdir())
    assert not (bundle.rootfs / "etc/ld.so.cache").exists()
