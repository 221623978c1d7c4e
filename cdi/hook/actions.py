"""The hook actions; each acts inside the container rootfs only, through `Rootfs`."""

from __future__ import annotations

import os

from cdi.hook.errors import HookError
from cdi.hook.rootfs import Rootfs

LDCACHE_CONF = "/etc/ld.so.conf.d/00-nvcr-gpu-cdi.conf"
# Sorts before LDCACHE_CONF, so ldconfig lists the compat libcuda before the host driver's.
COMPAT_CONF = "/etc/ld.so.conf.d/00-compat-gpu-cdi.conf"
COMPAT_DIR = "/usr/local/cuda/compat"
LD_SO_CONF = "/etc/ld.so.conf"
PARAMS = "/proc/driver/nvidia/params"


def create_symlinks(
    root: Rootfs, links: list[tuple[str, str]], optional: list[tuple[str, str]] | None = None
) -> None:
    """For each (target, link): `ln -sf target link` inside the rootfs.

    `optional` links are made only when their target exists in the container. They let the
    DRM by-path links of every GPU sit in the one common hook: runc creates the device nodes
    before createContainer hooks run, so a container gets exactly the links of the
    /dev/dri/card* and renderD* nodes it was given, without a hook process per device.
    """
    for target, link in links:
        root.symlink(target, link)
    for target, link in optional or []:
        # Lexical: the link's directory (dev/dri/by-path) usually does not exist yet.
        resolved = os.path.normpath(os.path.join(os.path.dirname(link), target))
        if root.lookup(resolved) is not None:
            root.symlink(target, link)


def update_ldcache(root: Rootfs, folders: list[str], ldconfig_path: str) -> None:
    """Add `folders` to the container's ld.so.conf.d and rebuild its ld.so.cache."""
    from cdi.hook.ldconfig import run_ldconfig

    if folders:
        root.write_file(LDCACHE_CONF, "".join(f"{f}\n" for f in folders).encode())
    if root.lookup(LD_SO_CONF) is None:
        # Minimal images (busybox, distroless) have no ld.so.conf, so ldconfig would never read
        # the drop-in; this is the line every glibc distribution ships.
        root.write_file(LD_SO_CONF, b"include /etc/ld.so.conf.d/*.conf\n")
    run_ldconfig(root, ldconfig_path)


def _libcuda_major(name: str) -> int | None:
    prefix = "libcuda.so."
    if not name.startswith(prefix):
        return None
    parts = name[len(prefix) :].split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        return None  # libcuda.so.1 is the SONAME link, not a versioned library
    return int(parts[0])


def driver_major(version: str) -> int:
    """Major number of a driver version such as 550.163.01."""
    head = version.split(".")[0]
    if not head.isdigit() or not all(p.isdigit() for p in version.split(".")):
        raise HookError(f"enable-cuda-compat: --host-driver-version {version!r} is not N.N[.N]")
    return int(head)


def enable_cuda_compat(root: Rootfs, host_driver_version: str) -> bool:
    """Use the image's CUDA forward-compat libcuda when it is newer than the host driver."""
    host = driver_major(host_driver_version)
    names = root.listdir(COMPAT_DIR)
    majors = [m for m in map(_libcuda_major, names or []) if m is not None]
    if not majors or max(majors) <= host:
        return False
    root.write_file(COMPAT_CONF, f"{COMPAT_DIR}\n".encode())
    return True


def disable_device_node_modification(root: Rootfs) -> bool:
    """Show the container a copy of the driver params with `ModifyDeviceFiles: 0`.

    The driver re-creates /dev/nvidia* nodes with its own modes when a process in the container
    opens a device while ModifyDeviceFiles is 1. The copy is mounted over the container's
    /proc/driver/nvidia/params in the container's mount namespace, where OCI runs
    createContainer hooks, so the host's view is unchanged. Without the driver file: no-op.
    """
    data = root.read_file(PARAMS)
    if data is None:
        return False
    lines = data.decode("utf-8", "replace").split("\n")
    changed = False
    for i, line in enumerate(lines):
        key, sep, value = line.partition(":")
        if sep and key.strip() == "ModifyDeviceFiles" and value.strip() != "0":
            lines[i] = f"{key}: 0"
            changed = True
    if not changed:
        return False
    from cdi.hook.mount import mount_file_over

    fd = root.resolve(PARAMS)
    try:
        what = f"{PARAMS} (in rootfs {root.path})"
        mount_file_over(fd, "\n".join(lines).encode(), 0o444, what)
    finally:
        os.close(fd)
    return True


def chmod(root: Rootfs, mode: int, paths: list[str]) -> None:
    """chmod each path inside the rootfs."""
    for path in paths:
        root.chmod(path, mode)
