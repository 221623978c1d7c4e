"""Build a fake NVIDIA host (driver files, /dev, host /proc and /sys) from a topology."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import attrs

from gpu_cdi_fakehost import compile as cc
from gpu_cdi_fakehost import layout, nvmlfile
from gpu_cdi_fakehost.catalog import MIG_COMPUTE_INSTANCE_IDS, MIG_GPU_INSTANCE_IDS
from gpu_cdi_fakehost.events import EVENTS_FILE, EventInjector
from gpu_cdi_fakehost.topology import Gpu, Topology, load_topology

MARKER = nvmlfile.MARKER
LAYOUTS = ("host", "driver-container")
DRIVER_CONTAINER_ROOT = "run/nvidia/driver"

# Character device majors of the reference host (nvidia-ctk.md section 1).
MAJOR_NVIDIA = 195
MAJOR_UVM = 510
MAJOR_CAPS = 508
MAJOR_IMEX = 507
MAJOR_NVSWITCH = 509
MAJOR_DRI = 226
GID_VIDEO = 44
GID_RENDER = 105
# Standard /proc/driver/nvidia-caps/mig-minors numbering.
MIG_MINORS_PER_GPU = 135


class BuildError(RuntimeError):
    """The fake host cannot be built where asked (the message says why)."""


@attrs.frozen
class FakeHost:
    """A built fake host and how to point the generator at it."""

    root: Path
    topology: Topology
    layout: str
    driver_root: Path
    dev_root: Path
    proc_sys_root: Path
    nvml_library: Path
    nvml_topology_file: Path
    device_nodes: bool
    notes: tuple[str, ...] = ()

    @property
    def driver_version(self) -> str:
        """The driver version the host was built for."""
        return self.topology.driver_version

    @property
    def lib_dir(self) -> Path:
        """The driver library directory (host path)."""
        return self.driver_root / layout.LIBDIR

    @property
    def events_file(self) -> Path:
        """The append-only file the fake NVML tails for events (beside the topology file)."""
        return self.nvml_topology_file.with_name(EVENTS_FILE)

    @property
    def events(self) -> EventInjector:
        """Inject NVML events (XIDs, a lost GPU, a failing wait) into this running host."""
        return EventInjector.for_topology(self.events_file, self.topology)

    @property
    def env(self) -> dict[str, str]:
        """Environment the fake NVML needs: the topology file it serves."""
        return {"FAKE_NVML_TOPOLOGY": str(self.nvml_topology_file)}

    @property
    def generate_argv(self) -> tuple[str, ...]:
        """`gpu-cdi generate` targeting this host."""
        return (
            "gpu-cdi",
            "generate",
            "--driver-root",
            str(self.driver_root),
            "--dev-root",
            str(self.dev_root),
            "--proc-sys-root",
            str(self.proc_sys_root),
        )

    def command_line(self) -> str:
        """The generate command as one pasteable shell line, environment included."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return f"{env} {shlex.join(self.generate_argv)}"


def build_host(
    topology: Topology | str | os.PathLike[str],
    root: str | os.PathLike[str],
    *,
    driver_version: str | None = None,
    layout_name: str = "host",
    device_nodes: bool | None = None,
    replace: bool = False,
    errors: list[dict[str, Any]] | None = None,
) -> FakeHost:
    """Build the fake host for `topology` (a Topology, shipped name or file) under `root`.

    layout_name "host": root is the host's "/" and the driver is installed in it.
    "driver-container": the driver root is <root>/run/nvidia/driver (GPU Operator style);
    /dev, /proc and /sys are the host's, under root.
    device_nodes: None = mknod when running as root, else skip with a note.
    errors: extra error-injection rules, in the topology file's `errors` syntax.
    """
    topo = topology if isinstance(topology, Topology) else load_topology(topology)
    if driver_version is not None:
        topo = topo.with_driver_version(driver_version)
    if errors:
        topo = topo.with_errors(errors)
    if layout_name not in LAYOUTS:
        raise BuildError(f"unknown layout {layout_name!r} (known: {', '.join(LAYOUTS)})")
    base = Path(root).absolute()
    _check_root(base, replace)
    notes: list[str] = []
    if device_nodes is None:
        device_nodes = os.geteuid() == 0
        if not device_nodes:
            notes.append("not root: device nodes were not created (mknod needs root)")
    driver_root = base if layout_name == "host" else base / DRIVER_CONTAINER_ROOT
    nvml_library = driver_root / layout.LIBDIR / layout.NVML_FILE.format(v=topo.driver_version)
    host = FakeHost(
        base, topo, layout_name, driver_root, base, base, nvml_library,
        base / MARKER / nvmlfile.TOPOLOGY_FILE, device_nodes,
    )  # fmt: skip
    # Built next to its final place and renamed into it, so a failed build leaves nothing
    # half-made at `root` (nothing in the tree records its own absolute path).
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{base.name}.building-", dir=base.parent))
    except OSError as e:
        raise BuildError(f"--root {base}: cannot create a directory in {base.parent}: "
                         f"{e.strerror}") from None  # fmt: skip
    try:
        _build_tree(work, host, notes)
        if base.exists():
            old = base.with_name(f".{base.name}.old-{os.getpid()}")
            base.rename(old)
            work.rename(base)
            shutil.rmtree(old)
        else:
            work.rename(base)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return attrs.evolve(host, notes=tuple(notes))


def _build_tree(work: Path, host: FakeHost, notes: list[str]) -> None:
    """Lay the host out under `work`, which becomes host.root."""

    def at(path: Path) -> Path:
        return work / path.relative_to(host.root)

    topo, version = host.topology, host.driver_version
    driver_root = at(host.driver_root)
    os.chmod(work, 0o755)  # mkdtemp makes it 0700
    _skeleton(work)
    if driver_root != work:
        _skeleton(driver_root)
    _install_libraries(driver_root, version)
    _install_files(driver_root, version)
    _install_sockets(driver_root, notes)
    notes.extend(_ldcache(driver_root))
    _install_dev(at(host.dev_root), topo, host.device_nodes)
    _install_host_files(at(host.proc_sys_root), topo)
    nvmlfile.write(topo, at(host.nvml_topology_file))
    _write(at(host.events_file), "")
    meta = {
        "topology": topo.name,
        "source": topo.source,
        "driver_version": version,
        "layout": host.layout,
        "driver_root": str(host.driver_root),
        "dev_root": str(host.dev_root),
        "proc_sys_root": str(host.proc_sys_root),
        "env": host.env,
        "generate_argv": list(host.generate_argv),
        "device_nodes": host.device_nodes,
        "notes": notes,
    }
    _write(work / MARKER / "host.json", json.dumps(meta, indent=2) + "\n")


def _check_root(base: Path, replace: bool) -> None:
    if base.exists() and not base.is_dir():
        raise BuildError(f"--root {base}: exists and is not a directory")
    if base.is_dir() and any(base.iterdir()):
        if not (base / MARKER).is_dir():
            raise BuildError(f"--root {base}: directory is not empty and is not a fake host")
        if not replace:
            raise BuildError(f"--root {base}: already holds a fake host (use --replace)")
    for parent in base.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BuildError(f"--root {base}: {parent} is not a directory")
            break
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BuildError(f"--root {base}: cannot create {base.parent}: {e.strerror}") from None


def _ensure_dir(path: Path) -> None:
    # a stat is far cheaper than a mkdir that fails with EEXIST, and most parents exist
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)


def _write(path: Path, content: str | bytes, mode: int = 0o644) -> None:
    _ensure_dir(path.parent)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    os.chmod(path, mode)


def _symlink(link: Path, target: str) -> None:
    _ensure_dir(link.parent)
    link.symlink_to(target)


def _skeleton(root: Path) -> None:
    """Merged-usr layout of the reference root."""
    for d in ("usr/bin", "usr/lib", "usr/lib64", "usr/sbin", "mnt", "proc", "sys", "run", "dev"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
    ):
        _symlink(root / link, target)
    _symlink(root / "var/run", "../run")


def _install_libraries(root: Path, version: str) -> Path:
    libdir = root / layout.LIBDIR
    template = cc.build_stub_template().read_bytes()
    nvml_path = libdir / layout.NVML_FILE.format(v=version)
    # libraries NVIDIA's tools call into get working fakes; the rest only need to exist
    fakes = {
        nvml_path.name: cc.build_fake_nvml,
        layout.SANDBOXUTILS_FILE.format(v=version): cc.build_fake_sandboxutils,
    }
    for lib in layout.libraries(version):
        path = libdir / lib.file
        _ensure_dir(path.parent)
        if lib.file in fakes:
            shutil.copyfile(fakes[lib.file](), path)
            os.chmod(path, 0o644)
        else:
            _write(path, cc.stub_library(template, lib.soname))
        for link, target in lib.links:
            _symlink(libdir / link, target)
    for link, target in layout.EXTRA_LINKS:
        _symlink(libdir / link, target)
    return nvml_path


def _install_files(root: Path, version: str) -> None:
    for name in layout.BINARIES:
        _write(root / "usr/bin" / name, f"#!/bin/sh\necho fake {name} {version}\n", 0o755)
    for name in layout.FIRMWARE:
        _write(root / f"usr/lib/firmware/nvidia/{version}" / name, "fake gsp firmware\n")
    for rel, content in layout.config_files(version).items():
        _write(root / rel, content)
    _write(root / "run/nvidia-persistenced/nvidia-persistenced.pid", "4242\n")
    _write(root / "tmp/nvidia-mps/control", "", 0o666)


def _install_sockets(root: Path, notes: list[str]) -> None:
    for rel in ("run/nvidia-persistenced/socket", "run/nvidia-fabricmanager/socket"):
        path = root / rel
        _ensure_dir(path.parent)
        # AF_UNIX paths are limited to 107 bytes; binding through /proc/self/fd/N keeps it short.
        dirfd = os.open(path.parent, os.O_PATH)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.bind(f"/proc/self/fd/{dirfd}/{path.name}")
        except OSError as e:
            notes.append(f"socket {rel} not created: {e.strerror}")
        finally:
            os.close(dirfd)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path, 0o755)


def _ldcache(root: Path) -> list[str]:
    """Write <root>/etc/ld.so.cache with the system ldconfig (chroots, so root or userns)."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    cmd = [ldconfig, "-X", "-r", str(root)]
    if os.geteuid() != 0:
        unshare = shutil.which("unshare")
        if unshare is None:
            return ["not root and no unshare: etc/ld.so.cache was not created"]
        cmd = [unshare, "-r", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not (root / "etc/ld.so.cache").is_file():
        return [f"etc/ld.so.cache was not created: {' '.join(cmd)}: {proc.stderr.strip()}"]
    return []


# ------------------------------------------------------------------ /dev


@attrs.frozen
class Node:
    """A character device node to create."""

    path: str  # relative to the dev root, e.g. "dev/nvidia0"
    major: int
    minor: int
    mode: int = 0o666
    gid: int = 0


def drm_assignment(topo: Topology) -> tuple[dict[str, int], dict[int, tuple[int, int]]]:
    """DRM numbering: other display devices take card0.. first, then the GPUs in index order.

    Returns (card index by non-GPU sysfs bdf, (card, render minor) by GPU index).
    """
    others = {p.sysfs: i for i, p in enumerate(topo.other_display_devices)}
    gpus = {g.index: (len(others) + g.index, 128 + g.index) for g in topo.gpus}
    return others, gpus


def mig_minor(gpu_minor: int, gi: int, ci: int | None = None) -> int:
    """The nvidia-cap minor of gpu<N>/gi<G>[/ci<C>]/access in the standard mig-minors table."""
    base = 3 + MIG_MINORS_PER_GPU * gpu_minor + 9 * gi
    return base if ci is None else base + 1 + ci


def device_nodes(topo: Topology) -> list[Node]:
    """Every device node of the host."""
    nodes = [
        Node("dev/null", 1, 3),
        Node("dev/nvidiactl", MAJOR_NVIDIA, 255),
        Node("dev/nvidia-modeset", MAJOR_NVIDIA, 254),
        Node("dev/nvidia-uvm", MAJOR_UVM, 0),
        Node("dev/nvidia-uvm-tools", MAJOR_UVM, 1),
        Node("dev/nvidia-caps/nvidia-cap1", MAJOR_CAPS, 1, 0o400),
        Node("dev/nvidia-caps/nvidia-cap2", MAJOR_CAPS, 2, 0o444),
    ]
    nodes += [Node(f"dev/nvidia{g.minor}", MAJOR_NVIDIA, g.minor) for g in topo.gpus]
    others, gpus = drm_assignment(topo)
    nodes += [Node(f"dev/dri/card{c}", MAJOR_DRI, c, 0o660, GID_VIDEO) for c in others.values()]
    for card, render in gpus.values():
        nodes.append(Node(f"dev/dri/card{card}", MAJOR_DRI, card, 0o660, GID_VIDEO))
        nodes.append(Node(f"dev/dri/renderD{render}", MAJOR_DRI, render, 0o660, GID_RENDER))
    for g in topo.gpus:
        for gi in g.gpu_instances:
            m = mig_minor(g.minor, gi.id)
            nodes.append(Node(f"dev/nvidia-caps/nvidia-cap{m}", MAJOR_CAPS, m, 0o444))
            for ci in gi.compute_instances:
                m = mig_minor(g.minor, gi.id, ci.id)
                nodes.append(Node(f"dev/nvidia-caps/nvidia-cap{m}", MAJOR_CAPS, m, 0o444))
    nodes += [
        Node(f"dev/nvidia-caps-imex-channels/channel{i}", MAJOR_IMEX, i)
        for i in range(topo.imex_channels)
    ]
    ex = topo.extras
    nodes += [Node(f"dev/nvidia-nvswitch{i}", MAJOR_NVSWITCH, i) for i in range(ex.nvswitches)]
    if ex.nvswitches:
        nodes.append(Node("dev/nvidia-nvswitchctl", MAJOR_NVSWITCH, 255))
    nodes += [Node(f"dev/nvidia-fs{i}", 261, i) for i in range(ex.gds_devices)]
    if ex.gdrcopy:
        nodes.append(Node("dev/gdrdrv", 240, 0))
    if ex.infiniband:
        nodes += [Node("dev/infiniband/rdma_cm", 10, 58), Node("dev/infiniband/uverbs0", 231, 192)]
    return nodes


def _install_dev(root: Path, topo: Topology, mknod: bool) -> None:
    seen: set[str] = set()
    for node in device_nodes(topo):
        if node.path in seen:
            continue
        seen.add(node.path)
        path = root / node.path
        _ensure_dir(path.parent)
        if mknod:
            os.mknod(path, stat.S_IFCHR | node.mode, os.makedev(node.major, node.minor))
            os.chmod(path, node.mode)  # mknod applies the umask
            if node.gid:
                os.chown(path, 0, node.gid)
    others, gpus = drm_assignment(topo)
    by_path = root / "dev/dri/by-path"
    by_path.mkdir(parents=True, exist_ok=True)
    for bdf, card in others.items():
        _symlink(by_path / f"pci-{bdf}-card", f"../card{card}")
    for g in topo.gpus:
        card, render = gpus[g.index]
        _symlink(by_path / f"pci-{g.pci.sysfs}-card", f"../card{card}")
        _symlink(by_path / f"pci-{g.pci.sysfs}-render", f"../renderD{render}")


# ------------------------------------------------------------------ host /proc and /sys


def _mig_minors(n_gpus: int) -> str:
    lines = ["config 1", "monitor 2"]
    for g in range(n_gpus):
        for gi in range(MIG_GPU_INSTANCE_IDS):
            lines.append(f"gpu{g}/gi{gi}/access {mig_minor(g, gi)}")
            lines += [
                f"gpu{g}/gi{gi}/ci{ci}/access {mig_minor(g, gi, ci)}"
                for ci in range(MIG_COMPUTE_INSTANCE_IDS)
            ]
    return "\n".join(lines) + "\n"


def _access(minor: int, mode: int) -> str:
    return f"DeviceFileMinor: {minor}\nDeviceFileMode: {mode}\nDeviceFileModify: 1\n"


def _information(g: Gpu) -> str:
    return (
        f"Model: \t\t {g.name}\nIRQ:   \t\t {100 + g.index}\nGPU UUID: \t {g.uuid}\n"
        f"Video BIOS: \t ??.??.??.??.??\nBus Type: \t PCIe\nDMA Size: \t 47 bits\n"
        f"DMA Mask: \t 0x7fffffffffff\nBus Location: \t {g.pci.sysfs}\n"
        f"Device Minor: \t {g.minor}\nGPU Excluded:\t No\n"
    )


def _install_host_files(root: Path, topo: Topology) -> None:
    drv = root / "proc/driver/nvidia"
    _write(
        drv / "version",
        f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {topo.driver_version}  fake\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n",
    )
    _write(
        drv / "params",
        "ModifyDeviceFiles: 1\nDeviceFileUID: 0\nDeviceFileGID: 0\nDeviceFileMode: 438\n",
    )
    caps = drv / "capabilities"
    _write(caps / "mig/config", _access(1, 0o400), 0o444)
    _write(caps / "mig/monitor", _access(2, 0o444), 0o444)
    for g in topo.gpus:
        _write(drv / "gpus" / g.pci.sysfs / "information", _information(g))
        for gi in g.gpu_instances:
            d = caps / f"gpu{g.minor}/mig/gi{gi.id}"
            _write(d / "access", _access(mig_minor(g.minor, gi.id), 0o444), 0o444)
            for ci in gi.compute_instances:
                m = mig_minor(g.minor, gi.id, ci.id)
                _write(d / f"ci{ci.id}/access", _access(m, 0o444), 0o444)
    n = max([g.minor + 1 for g in topo.gpus] or [0])
    _write(root / "proc/driver/nvidia-caps/mig-minors", _mig_minors(n), 0o444)
    _write(root / "proc/driver/nvidia-caps/sys-minors", "config 1\nmonitor 2\n", 0o444)
    _write(
        root / "proc/devices",
        "Character devices:\n  1 mem\n 10 misc\n195 nvidia-frontend\n226 drm\n"
        f"{MAJOR_IMEX} nvidia-caps-imex-channels\n{MAJOR_CAPS} nvidia-caps\n"
        f"{MAJOR_NVSWITCH} nvidia-nvswitch\n{MAJOR_UVM} nvidia-uvm\n\nBlock devices:\n",
        0o444,
    )
    others, gpus = drm_assignment(topo)
    pci = root / "sys/bus/pci/devices"
    for bdf, card in others.items():
        (pci / bdf / "drm" / f"card{card}").mkdir(parents=True)
    for g in topo.gpus:
        card, render = gpus[g.index]
        (pci / g.pci.sysfs / "drm" / f"card{card}").mkdir(parents=True)
        (pci / g.pci.sysfs / "drm" / f"renderD{render}").mkdir(parents=True)
        # what the kernel says without NUMA information: -1
        numa = -1 if g.numa_node is None else g.numa_node
        _write(pci / g.pci.sysfs / "numa_node", f"{numa}\n", 0o444)
    _write(root / "sys/module/firmware_class/parameters/path", "\n")
