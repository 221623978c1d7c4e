"""Driver file discovery on small driver roots built here (real ELF libraries, real symlinks)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from cdi.nvidia import driver
from tests.generator.elfs import shared_library
from tests.require import need_tool

V = "550.163.01"


def _root(tmp_path: Path, libdir: str = "usr/lib/x86_64-linux-gnu") -> Path:
    root = tmp_path / "root"
    lib = root / libdir
    shared_library(lib, f"libcuda.so.{V}", "libcuda.so.1")
    os.symlink(f"libcuda.so.{V}", lib / "libcuda.so.1")
    os.symlink("libcuda.so.1", lib / "libcuda.so")
    shared_library(lib, f"libnvidia-tls.so.{V}", f"libnvidia-tls.so.{V}")
    shared_library(lib / "vdpau", f"libvdpau_nvidia.so.{V}", "libvdpau_nvidia.so.1")
    shared_library(lib, "libnvidia-egl-gbm.so.1.1.1", "libnvidia-egl-gbm.so.1")
    shared_library(lib, "libunrelated.so.1.2.3", "libunrelated.so.1")
    return root


def test_libraries_merged_usr(tmp_path: Path) -> None:
    root = _root(tmp_path)
    os.symlink("usr/lib", root / "lib")  # merged /usr: /lib/x86_64-linux-gnu is the same dir
    dirs = driver.library_dirs(str(root))
    assert dirs.count("/usr/lib/x86_64-linux-gnu") == 1
    assert "/lib/x86_64-linux-gnu" not in dirs
    libs, used = driver.libraries(str(root), dirs, V)
    assert used == ["/usr/lib/x86_64-linux-gnu"]
    by_name = {os.path.basename(lib.path): lib for lib in libs}
    names = [f"libcuda.so.{V}", f"libnvidia-tls.so.{V}", f"libvdpau_nvidia.so.{V}"]
    assert sorted(by_name) == names
    cuda = by_name[f"libcuda.so.{V}"]
    assert (cuda.soname, cuda.links) == ("libcuda.so.1", ("libcuda.so", "libcuda.so.1"))
    assert by_name[f"libvdpau_nvidia.so.{V}"].path.endswith("/vdpau/libvdpau_nvidia.so." + V)
    graphics = driver.graphics_files(str(root), used, V)
    assert [f.path for f in graphics] == ["/usr/lib/x86_64-linux-gnu/libnvidia-egl-gbm.so.1.1.1"]
    assert driver.version_from_files(str(root), used) == V


def test_libraries_found_through_ld_so_cache_only(tmp_path: Path) -> None:
    ldconfig = need_tool("ldconfig")
    root = _root(tmp_path, "opt/nvidia/lib")
    (root / "etc").mkdir()
    (root / "etc/ld.so.conf").write_text("/opt/nvidia/lib\n")
    subprocess.run(
        [ldconfig, "-r", str(root), "-C", "/etc/ld.so.cache", "-f", "/etc/ld.so.conf"],
        check=True,
        capture_output=True,
    )
    dirs = driver.library_dirs(str(root))
    assert dirs == ["/opt/nvidia/lib"]
    lib = driver.find_library(str(root), dirs, "libcuda.so.1")
    assert lib == f"{root}/opt/nvidia/lib/libcuda.so.{V}"
    # --library-search-path comes first.
    assert driver.library_dirs(str(root), ["/opt/nvidia/lib"])[0] == "/opt/nvidia/lib"


def test_binaries_firmware_ipc_configs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    smi = root / "usr/bin/nvidia-smi"
    smi.write_text("#!/bin/sh\n")
    smi.chmod(0o755)
    (root / "usr/bin/nvidia-debugdump").write_text("not executable")
    os.symlink("usr/bin", root / "bin")
    fw = root / f"usr/lib/firmware/nvidia/{V}"
    fw.mkdir(parents=True)
    (fw / "gsp_ga10x.bin").write_bytes(b"fw")
    os.symlink("usr/lib", root / "lib")
    (root / "run/nvidia-persistenced").mkdir(parents=True)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "run/nvidia-persistenced/socket"))
    (root / "tmp/nvidia-mps").mkdir(parents=True)  # a directory: never mounted
    (root / "usr/share/vulkan/icd.d").mkdir(parents=True)
    (root / "usr/share/vulkan/icd.d/nvidia_icd.json").write_text("{}")
    base = str(root)
    assert [f.path for f in driver.binaries(base)] == ["/usr/bin/nvidia-smi"]
    (firmware,) = driver.firmware(base, V)
    # Found through /lib -> usr/lib but mounted at the path searched, as nvidia-ctk does.
    assert firmware.container_path == f"/lib/firmware/nvidia/{V}/gsp_ga10x.bin"
    assert [(f.kind, f.path) for f in driver.ipc(base)] == [
        ("ipc", "/run/nvidia-persistenced/socket")
    ]
    (icd,) = driver.configs(base)
    assert (icd.path, icd.container_path) == (
        "/usr/share/vulkan/icd.d/nvidia_icd.json",
        "/etc/vulkan/icd.d/nvidia_icd.json",
    )
    sock.close()


def test_glob_match_is_fnmatchcase_for_star_patterns() -> None:
    """Every pattern of `*`, `a`, `.` up to 4 long against every name up to 5 long, and the
    graphics patterns (only `*` wildcards) against the names they are meant for."""
    import fnmatch
    import itertools

    assert all("?" not in p and "[" not in p for p in driver.GRAPHICS_LIBRARIES)
    words = ["".join(w) for n in range(6) for w in itertools.product("a.b", repeat=n)]
    patterns = ["".join(p) for n in range(5) for p in itertools.product("*a.", repeat=n)]
    for pattern in patterns:
        for name in words:
            assert driver.glob_match(name, pattern) == fnmatch.fnmatchcase(name, pattern), (
                name,
                pattern,
            )
    names = [
        "libnvidia-egl-gbm.so.1.1.1",
        "libnvidia-egl-gbm.so.1",
        "libnvidia-egl-gbm.so..",
        "libnvidia-egl-wayland2.so.1.0",
        "libnvidia-egl-xlib.so.1.0.0",
        "libEGL.so.1.1",
    ]
    for pattern in driver.GRAPHICS_LIBRARIES:
        for name in names:
            assert driver.glob_match(name, pattern) == fnmatch.fnmatchcase(name, pattern)
