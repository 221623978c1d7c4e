"""The driver's files under the driver root: libraries, graphics files, binaries, firmware,
IPC sockets and config files, found where nvidia-ctk looks for them (docs/generator.md).

`root` is where the driver root is in this filesystem (roots.py); the paths returned are
inside it, symlinks resolved as if it were `/`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from cdi.nvidia import elf, ldcache
from cdi.nvidia import rootpath as rp
from cdi.nvidia.inventory import File, Library

_ARCHES = ("x86_64", "aarch64")
LIBRARY_DIRS = (
    "/usr/lib64",
    *(f"/usr/lib/{a}-linux-gnu{s}" for a in _ARCHES for s in ("", "/nvidia/current")),
    "/lib64",
    *(f"/lib/{a}-linux-gnu{s}" for a in _ARCHES for s in ("", "/nvidia/current")),
)
BINARY_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
BINARIES = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
    "nvidia-imex",
    "nvidia-imex-ctl",
)
GRAPHICS_BINARIES = ("nvidia-xconfig",)
GRAPHICS_LIBRARIES = (
    "libnvidia-egl-gbm.so.*.*",
    "libnvidia-egl-wayland.so.*.*",
    "libnvidia-egl-wayland2.so.*.*",
    "libnvidia-egl-xcb.so.*.*",
    "libnvidia-egl-xlib.so.*.*",
)
# What each of them starts with: most names in a library directory are told apart by that.
_GRAPHICS_PREFIXES = tuple(pattern.split("*", 1)[0] for pattern in GRAPHICS_LIBRARIES)
# Each group: the first path that exists is mounted (directories are never mounted).
IPC = (
    ("/run/nvidia-persistenced/socket", "/var/run/nvidia-persistenced/socket"),
    ("/run/nvidia-fabricmanager/socket", "/var/run/nvidia-fabricmanager/socket"),
    ("/tmp/nvidia-mps",),
)
CONFIG_DIRS = ("/etc", "/usr/local/share", "/usr/share")
_EGL = "egl/egl_external_platform.d/"
CONFIGS = (
    ("glvnd/egl_vendor.d/10_nvidia.json", "/usr/share/"),
    *((f"{_EGL}{n}.json", "/usr/share/") for n in ("15_nvidia_gbm", "10_nvidia_wayland")),
    *((f"{_EGL}{n}.json", "/usr/share/") for n in ("09_nvidia_wayland2", "20_nvidia_xcb")),
    (f"{_EGL}20_nvidia_xlib.json", "/usr/share/"),
    ("nvidia/nvoptix.bin", "/usr/share/"),
    ("X11/xorg.conf.d/10-nvidia.conf", "/usr/share/"),
    ("X11/xorg.conf.d/nvidia-drm-outputclass.conf", "/usr/share/"),
    ("OpenCL/vendors/nvidia.icd", "/etc/"),
    ("vulkan/icd.d/nvidia_icd.json", "/etc/"),
    ("vulkan/icd.d/nvidia_layers.json", "/etc/"),
    ("vulkan/implicit_layer.d/nvidia_layers.json", "/etc/"),
    (f"vulkan/icd.d/nvidia_icd.{os.uname().machine}.json", "/etc/"),
)
XORG_SUBDIRS = tuple(
    f"xorg/modules/{u}{k}" for u in ("", "updates/") for k in ("drivers", "extensions")
)


def _ld_cache(root: str) -> list[ldcache.Entry]:
    where = rp.local(root, "/etc/ld.so.cache")
    return [] if where is None else ldcache.load(where)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def library_dirs(root: str, extra: Sequence[str] = ()) -> list[str]:
    """Resolved directories holding `lib*.so.<version>` files: search dirs, then ld.so.cache."""
    found: list[str] = []
    for folder in (*extra, *LIBRARY_DIRS):
        real = rp.resolve(root, folder)
        if real is not None and rp.is_dir(root, real):
            found.append(real)
    for entry in _ld_cache(root):
        if entry.wide:
            real = rp.resolve(root, os.path.dirname(entry.path))
            if real is not None:
                found.append(real)
    return _unique(found)


def versioned_libraries(root: str, dirs: Sequence[str], version: str) -> list[str]:
    """Resolved paths of every `lib*.so.<version>` in `dirs` (and their vdpau/ subdirectory)."""
    suffix = f".so.{version}"
    out: list[str] = []
    for folder in dirs:
        for sub in (folder, folder + "/vdpau"):
            for name in rp.listdir(root, sub):
                if name.startswith("lib") and name.endswith(suffix):
                    real = rp.resolve(root, f"{sub}/{name}")
                    if real is not None and rp.is_file(root, real):
                        out.append(real)
    return _unique(out)


def libraries(root: str, dirs: Sequence[str], version: str) -> tuple[list[Library], list[str]]:
    """The driver libraries with their SONAME and sibling links, and the dirs they were in."""
    paths = versioned_libraries(root, dirs, version)
    libs = []
    for path in sorted(paths):
        folder, name = os.path.split(path)
        so = elf.soname(rp.host(root, path)) or name
        stem = name.split(".so", 1)[0]
        links = tuple(
            sorted(
                {
                    n
                    for n in (so, f"{stem}.so")
                    if n != name and os.path.lexists(rp.host(root, f"{folder}/{n}"))
                }
            )
        )
        libs.append(Library(path, so, links))
    used = [d for d in dirs if any(os.path.dirname(p) == d for p in paths)]
    return libs, used


def _first(root: str, candidates: Iterable[str], want_dir: bool = False) -> str | None:
    for candidate in candidates:
        real = rp.resolve(root, candidate)
        if real is not None and (rp.is_dir(root, real) if want_dir else rp.is_file(root, real)):
            return real
    return None


def graphics_files(root: str, dirs: Sequence[str], version: str) -> list[File]:
    """Graphics libraries outside the `*.so.<version>` rule, X.Org modules, nvidia-xconfig."""
    out: list[File] = []
    for folder in dirs:
        for name in rp.listdir(root, folder):
            if name.startswith(_GRAPHICS_PREFIXES) and any(
                glob_match(name, pattern) for pattern in GRAPHICS_LIBRARIES
            ):
                real = rp.resolve(root, f"{folder}/{name}")
                if real is not None and rp.is_file(root, real):
                    out.append(File("graphics", real, real))
    xorg_dirs = [f"{d}/nvidia/xorg" for d in dirs] + [
        f"{d}/{s}" for d in dirs for s in XORG_SUBDIRS
    ]
    for base in ("/usr/lib", "/usr/lib64", "/usr/X11R6/lib", "/usr/X11R6/lib64"):
        xorg_dirs += [f"{base}/{s}" for s in XORG_SUBDIRS]
    for module in (f"libglxserver_nvidia.so.{version}", "nvidia_drv.so"):
        found = _first(root, (f"{d}/{module}" for d in xorg_dirs))
        if found is not None:
            out.append(File("xorg", found, found))
    for binary in GRAPHICS_BINARIES:
        found = _binary(root, binary)
        if found is not None:
            out.append(File("graphics", found, found))
    return _unique_files(out)


def glob_match(name: str, pattern: str) -> bool:
    """`fnmatch.fnmatchcase(name, pattern)` for a pattern whose only wildcard is `*`, without
    the regex fnmatch compiles for each pattern (most of what finding the graphics files cost)."""
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return name == pattern
    first, *middle, last = pieces
    if len(name) < len(first) + len(last) or not name.startswith(first) or not name.endswith(last):
        return False
    at, end = len(first), len(name) - len(last)
    for piece in middle:  # leftmost is enough: each `*` takes what lies between the pieces
        at = name.find(piece, at, end)
        if at < 0:
            return False
        at += len(piece)
    return True


def _unique_files(files: Iterable[File]) -> list[File]:
    seen: set[str] = set()
    out = []
    for file in files:
        if file.container_path not in seen:
            seen.add(file.container_path)
            out.append(file)
    return out


def _binary(root: str, name: str) -> str | None:
    for folder in BINARY_DIRS:
        real = rp.resolve(root, f"{folder}/{name}")
        if real is not None and rp.is_file(root, real) and os.access(rp.host(root, real), os.X_OK):
            return real
    return None


def binaries(root: str) -> list[File]:
    """The driver's command-line tools (first executable match in the usual PATH)."""
    out = []
    for name in BINARIES:
        found = _binary(root, name)
        if found is not None:
            out.append(File("binary", found, found))
    return out


def firmware(root: str, version: str, custom: str = "") -> list[File]:
    """GSP firmware `nvidia/<version>/gsp*.bin`; `custom` is the host's firmware_class path."""
    release = os.uname().release
    bases = [custom] if custom.startswith("/") else []
    bases += ["/lib/firmware/updates/" + release, "/lib/firmware/updates"]
    bases += ["/lib/firmware/" + release, "/lib/firmware"]
    out: list[File] = []
    for base in bases:
        folder = f"{base}/nvidia/{version}"
        real = rp.resolve(root, folder)
        if real is None:
            continue
        for name in rp.listdir(root, real):
            if name.startswith("gsp") and name.endswith(".bin"):
                # Mounted at the path it was found under: /lib/firmware stays /lib/firmware
                # on merged-usr hosts, as with nvidia-ctk.
                out.append(File("firmware", f"{folder}/{name}", f"{folder}/{name}"))
    by_name: dict[str, File] = {}
    for file in out:
        by_name.setdefault(os.path.basename(file.path), file)
    return list(by_name.values())


def ipc(root: str) -> list[File]:
    """Sockets of nvidia-persistenced, fabricmanager and MPS (never a directory)."""
    out = []
    for group in IPC:
        for path in group:
            real = rp.resolve(root, path)
            if (
                real is not None
                and os.path.exists(rp.host(root, real))
                and not rp.is_dir(root, real)
            ):
                out.append(File("ipc", path, path))
                break
    return out


def configs(root: str) -> list[File]:
    """Graphics and compute config files, mounted where the loaders in a container look."""
    out = []
    for relative, container_base in CONFIGS:
        found = _first(root, (f"{d}/{relative}" for d in CONFIG_DIRS))
        if found is not None:
            out.append(File("config", found, container_base + relative))
    return out


def version_from_files(root: str, dirs: Sequence[str]) -> str | None:
    """The driver version from `libcuda.so.X.Y[.Z]` or `libnvidia-ml.so.X.Y[.Z]`, if any."""
    for stem in ("libcuda.so.", "libnvidia-ml.so."):
        for folder in dirs:
            for name in rp.listdir(root, folder):
                rest = name[len(stem) :]
                if (
                    name.startswith(stem)
                    and rest.count(".") >= 1
                    and rest.replace(".", "").isdigit()
                ):
                    return rest
    return None


def find_library(root: str, dirs: Sequence[str], name: str) -> str | None:
    """Host path of library `name` (e.g. libnvidia-ml.so.1) under `root`, via dirs or ld cache."""
    for folder in dirs:
        real = rp.resolve(root, f"{folder}/{name}")
        if real is not None and rp.is_file(root, real):
            return rp.host(root, real)
    for entry in _ld_cache(root):
        if entry.wide and entry.name == name:
            real = rp.resolve(root, entry.path)
            if real is not None and rp.is_file(root, real):
                return rp.host(root, real)
    return None
