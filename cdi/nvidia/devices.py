"""Device nodes under the dev root, and the kernel's view of GPUs in /sys and /proc.

Every function takes the root it reads under as a path of this filesystem (see roots.py), and
resolves symlinks inside it. /sys/bus/pci and /proc/driver are read under the /proc and /sys
root, never under the driver root: a driver container does not carry the node's /sys and /proc.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from itertools import repeat

from cdi.nvidia import rootpath as rp
from cdi.nvidia.inventory import Link, Node

CAPS_DIR = "/dev/nvidia-caps"
IMEX_DIR = "/dev/nvidia-caps-imex-channels"
# Nodes no mode of ours puts in a spec (GPUDirect Storage, NVSwitch, NVLink).
_SKIPPED = ("nvidia-fs", "nvidia-nvswitch", "nvidia-nvlink")


def _char_device(where: str, path: str) -> Node | None:
    try:
        info = os.lstat(where)
    except OSError:
        return None
    if not stat.S_ISCHR(info.st_mode):
        return None
    return Node(
        path, os.major(info.st_rdev), os.minor(info.st_rdev), info.st_mode & 0o7777, info.st_gid
    )


def node(dev_root: str, path: str) -> Node | None:
    """The character device at `path` under `dev_root` (a symlink or anything else: None)."""
    where = rp.entry(dev_root, path)
    return None if where is None else _char_device(where, path)


def nvidia_nodes(dev_root: str) -> list[Node]:
    """Every /dev/nvidia* node, MIG cap node and IMEX channel node under `dev_root`."""
    out: list[Node] = []
    for folder, wanted in (("/dev", _is_nvidia), (CAPS_DIR, None), (IMEX_DIR, None)):
        # Each directory is resolved once, not once per node (hundreds of MIG cap nodes).
        where = rp.local(dev_root, folder)
        try:
            names = sorted(os.listdir(where)) if where is not None else []
        except OSError:
            continue
        for name in names:
            if wanted is None or wanted(name):
                found = _char_device(f"{where}/{name}", f"{folder}/{name}")
                if found is not None:
                    out.append(found)
    return out


def _is_nvidia(name: str) -> bool:
    return name.startswith("nvidia") and not name.startswith(_SKIPPED)


def drm_nodes(proc_sys_root: str, pci: str) -> list[str]:
    """/dev/dri paths of the DRM nodes the node's /sys lists for PCI device `pci`."""
    names = rp.listdir(proc_sys_root, f"/sys/bus/pci/devices/{pci}/drm")
    return [f"/dev/dri/{n}" for n in names if n.startswith(("card", "renderD"))]


def by_path_links(dev_root: str, pci: str, drm: Iterable[str]) -> list[Link]:
    """/dev/dri/by-path links of `pci` that point at one of its DRM nodes `drm`."""
    names = {os.path.basename(path) for path in drm}
    out = []
    for suffix in ("card", "render"):
        path = f"/dev/dri/by-path/pci-{pci}-{suffix}"
        where = rp.entry(dev_root, path)
        if where is None:
            continue
        try:
            target = os.readlink(where)
        except OSError:
            continue
        if os.path.basename(target) in names:
            out.append(Link(path, target))
    return out


def mig_minors(proc_sys_root: str) -> dict[str, str]:
    """The node's /proc/driver/nvidia-caps/mig-minors: capability name -> cap node minor (its
    digits: of the thousands of lines, a spec needs two per MIG device, converted by
    `mig_caps`)."""
    text = rp.read_text(proc_sys_root, "/proc/driver/nvidia-caps/mig-minors") or ""
    pairs = map(str.rpartition, map(str.strip, text.splitlines()), repeat(" "))
    return {name: minor for name, _, minor in pairs if name and minor.isdecimal()}


def mig_caps(minors: Mapping[str, str], gpu_minor: int, gi: int, ci: int) -> tuple[str, ...]:
    """Cap node paths a MIG device needs (GPU-instance access, compute-instance access); ()
    when mig-minors lacks either, since the device is unusable without both."""
    names = (f"gpu{gpu_minor}/gi{gi}/access", f"gpu{gpu_minor}/gi{gi}/ci{ci}/access")
    if not all(name in minors for name in names):
        return ()
    return tuple(f"{CAPS_DIR}/nvidia-cap{int(minors[name])}" for name in names)


def firmware_path(proc_sys_root: str) -> str:
    """The custom firmware search path the node's kernel was given ("" when none)."""
    return (rp.read_text(proc_sys_root, "/sys/module/firmware_class/parameters/path") or "").strip()
