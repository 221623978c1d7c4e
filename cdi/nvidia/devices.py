"""Device nodes under the dev root, and the host's view of GPUs in /sys and /proc.

/sys/bus/pci and /proc/driver are read under the host root (default `/`), never under the
driver root: a driver container does not carry the host's /sys and /proc.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from cdi.nvidia import rootpath as rp
from cdi.nvidia.inventory import Link, Node

CAPS_DIR = "/dev/nvidia-caps"
IMEX_DIR = "/dev/nvidia-caps-imex-channels"
# Nodes no mode of ours puts in a spec (GPUDirect Storage, NVSwitch, NVLink).
_SKIPPED = ("nvidia-fs", "nvidia-nvswitch", "nvidia-nvlink")


def node(dev_root: str, path: str) -> Node | None:
    """The character device at `path` under `dev_root` (a symlink or anything else: None)."""
    try:
        info = os.lstat(rp.host(dev_root, path))
    except OSError:
        return None
    if not stat.S_ISCHR(info.st_mode):
        return None
    return Node(
        path, os.major(info.st_rdev), os.minor(info.st_rdev), info.st_mode & 0o7777, info.st_gid
    )


def nvidia_nodes(dev_root: str) -> list[Node]:
    """Every /dev/nvidia* node, MIG cap node and IMEX channel node under `dev_root`."""
    paths = [
        f"/dev/{name}"
        for name in rp.listdir(dev_root, "/dev")
        if name.startswith("nvidia") and not name.startswith(_SKIPPED)
    ]
    paths += [f"{CAPS_DIR}/{name}" for name in rp.listdir(dev_root, CAPS_DIR)]
    paths += [f"{IMEX_DIR}/{name}" for name in rp.listdir(dev_root, IMEX_DIR)]
    return [n for n in (node(dev_root, path) for path in paths) if n is not None]


def drm_nodes(host_root: str, pci: str) -> list[str]:
    """/dev/dri paths of the DRM nodes the host's /sys lists for PCI device `pci`."""
    names = rp.listdir(host_root, f"/sys/bus/pci/devices/{pci}/drm")
    return [f"/dev/dri/{n}" for n in names if n.startswith(("card", "renderD"))]


def by_path_links(dev_root: str, pci: str, drm: Iterable[str]) -> list[Link]:
    """/dev/dri/by-path links of `pci` that point at one of its DRM nodes `drm`."""
    names = {os.path.basename(path) for path in drm}
    out = []
    for suffix in ("card", "render"):
        path = f"/dev/dri/by-path/pci-{pci}-{suffix}"
        try:
            target = os.readlink(rp.host(dev_root, path))
        except OSError:
            continue
        if os.path.basename(target) in names:
            out.append(Link(path, target))
    return out


def mig_minors(host_root: str) -> dict[str, int]:
    """The host's /proc/driver/nvidia-caps/mig-minors: capability name -> cap node minor."""
    out: dict[str, int] = {}
    try:
        with open(rp.host(host_root, "/proc/driver/nvidia-caps/mig-minors"), encoding="utf-8") as f:
            for line in f:
                name, _, minor = line.strip().rpartition(" ")
                if name and minor.isdigit():
                    out[name] = int(minor)
    except OSError:
        pass
    return out


def mig_caps(minors: dict[str, int], gpu_minor: int, gi: int, ci: int) -> tuple[str, ...]:
    """Cap node paths a MIG device needs (GPU-instance access, compute-instance access); ()
    when mig-minors lacks either, since the device is unusable without both."""
    names = (f"gpu{gpu_minor}/gi{gi}/access", f"gpu{gpu_minor}/gi{gi}/ci{ci}/access")
    if not all(name in minors for name in names):
        return ()
    return tuple(f"{CAPS_DIR}/nvidia-cap{minors[name]}" for name in names)


def firmware_path(host_root: str) -> str:
    """The custom firmware search path the host's kernel was given ("" when none)."""
    try:
        path = rp.host(host_root, "/sys/module/firmware_class/parameters/path")
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""
