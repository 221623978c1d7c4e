"""Inventory + options -> a CDI spec (the model): a pure function, no I/O, same input -> same
output.

What goes where follows nvidia-ctk 1.20.0 (see docs/generator.md): control nodes, driver files
and hooks in the spec-wide edits; per device its /dev/nvidiaN, DRM or MIG cap nodes and
additionalGids; a merged `all`. The hook actions of the devices (DRM by-path links) join the
common hook: one hook process per container. The spec's cdiVersion is the minimum its content
needs (the CDI core's rules, `cdi.version`).
"""

from __future__ import annotations

import os.path
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import attrs

from cdi.nvidia import naming
from cdi.nvidia.inventory import Gpu, Inventory, MigDevice, Node
from cdi.nvidia.rootpath import host as host_path
from cdi.spec import ContainerEdits, Device, DeviceNode, Hook, Mount, Spec
from cdi.version import minimum_requirement

# The kind each mode writes unless --vendor/--class say otherwise: those NVIDIA's device plugin
# (IMEX channels) and GPU Operator (management) use, not nvidia-ctk's nvidia.com/gpu for every
# mode, so that specs of different modes side by side never define the same devices.
DEFAULT_KINDS = {
    "nvml": ("nvidia.com", "gpu"),
    "management": ("management.nvidia.com", "gpu"),
    "imex": ("nvidia.com", "imex-channel"),
}
MODES = tuple(DEFAULT_KINDS)
CONTROL_NODES = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
)
IMEX_DIR = "/dev/nvidia-caps-imex-channels/"
RO_OPTIONS = ("ro", "nosuid", "nodev", "rbind", "rprivate")
IPC_OPTIONS = ("nosuid", "nodev", "rbind", "rprivate", "noexec")
# Management specs leave the graphics stack out, as nvidia-ctk does.
GRAPHICS_KINDS = frozenset(("graphics", "xorg", "config"))


# Hook actions (gpu-cdi-hook subcommands) the spec may call; the hook section below puts them
# into OCI hooks.
HOOKS = (
    "create-symlinks",
    "enable-cuda-compat",
    "update-ldcache",
    "disable-device-node-modification",
    "update-application-profile",
    "chmod",
)
DEFAULT_HOOKS = frozenset(HOOKS) - {"chmod"}


class BuildError(ValueError):
    """The options ask for something this inventory cannot give (e.g. an unknown device id)."""


class Options(NamedTuple):
    """What to build; defaults are nvidia-ctk's."""

    vendor: str = "nvidia.com"
    cls: str = "gpu"
    mode: str = "nvml"
    strategies: tuple[str, ...] = naming.DEFAULT_STRATEGIES
    device_ids: tuple[str, ...] = ("all",)
    all_device: bool = True
    hook_path: str = "/usr/bin/gpu-cdi-hook"
    hooks: frozenset[str] = DEFAULT_HOOKS
    hook_per_action: bool = False
    ldconfig_path: str = ""
    additional_gids: bool = True


class Built(NamedTuple):
    """A built spec and what the builder knows about it."""

    spec: Spec  # its cdiVersion is the minimum the content needs
    reason: str  # why it needs that version ("" at the oldest usable version)
    gids: tuple[int, ...]  # groups given through additionalGids, sorted
    notes: tuple[str, ...]  # devices left out and why, one line each


# ------------------------------------------------------------------------------------ helpers


def _depth_key(path: str) -> tuple[int, str]:
    # nvidia-ctk sorts nodes and mounts by the depth of the container path, then by path.
    return (path.count("/"), path)


def _device_node(inv: Inventory, node: Node, always_host_path: bool = False) -> DeviceNode:
    return DeviceNode(
        node.path,
        host_path=(
            host_path(inv.dev_root, node.path) if always_host_path or inv.dev_root != "/" else None
        ),
        major=node.major or None,
        minor=node.minor or None,
        file_mode=node.mode or None,
        permissions="rwm",
        gid=node.gid or None,
    )


def _needs_gid(node: Node) -> bool:
    # Without the group a process could not open a node that is not world read-writable.
    return node.gid != 0 and node.mode & 0o006 != 0o006


class _Edits:
    """Container edits being assembled: nodes, hook actions, mounts, gids, env."""

    def __init__(self) -> None:
        self.env: list[str] = []
        self.nodes: dict[str, Node] = {}
        self.actions: list[list[str]] = []
        self.mounts: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.gids: list[int] = []

    def add_node(self, node: Node, opts: Options) -> None:
        self.nodes.setdefault(node.path, node)
        if opts.additional_gids and _needs_gid(node) and node.gid not in self.gids:
            self.gids.append(node.gid)

    def add_action(self, opts: Options, hook: str, args: Sequence[str]) -> None:
        if hook in opts.hooks:
            self.actions.append([hook, *args])

    def merge(self, other: _Edits) -> None:
        self.nodes.update((k, v) for k, v in other.nodes.items() if k not in self.nodes)
        self.actions.extend(other.actions)
        self.gids.extend(g for g in other.gids if g not in self.gids)

    def to_model(
        self, inv: Inventory, opts: Options, always_host_path: bool = False
    ) -> ContainerEdits:
        nodes = sorted(self.nodes.values(), key=lambda n: _depth_key(n.path))
        mounts = sorted(self.mounts.items(), key=lambda item: _depth_key(item[0]))
        return ContainerEdits(
            env=self.env,
            device_nodes=[_device_node(inv, node, always_host_path) for node in nodes],
            hooks=_hooks(opts, self.actions),
            mounts=[Mount(host, path, options) for path, (host, options) in mounts],
            additional_gids=self.gids,
        )


# -------------------------------------------------------------------------------------- hooks
# Hook actions are collected per edits as [action, *args]; here they become OCI hooks: by
# default one gpu-cdi-hook call chaining every action, or one hook per action.

HOOK_STAGE = "createContainer"
# A hook with no env inherits the container's (runc), so an image's LD_PRELOAD would run
# inside our hook on the host (the CVE-2025-23266 class): always give it one.
HOOK_ENV = ("GPU_CDI_HOOK=1",)


def _merge_actions(actions: Iterable[list[str]]) -> list[list[str]]:
    """Actions folded by kind: the links of all devices in one create-symlinks, others once."""
    merged: dict[str, list[str]] = {}
    for name, *args in actions:
        if name not in merged:
            merged[name] = [name, *args]
        elif name == "create-symlinks":
            merged[name] += args
    return list(merged.values())


def _hooks(opts: Options, actions: list[list[str]]) -> list[Hook]:
    if not actions:
        return []
    program = os.path.basename(opts.hook_path)
    groups = actions if opts.hook_per_action else [[t for a in actions for t in a]]
    return [Hook(HOOK_STAGE, opts.hook_path, [program, *group], HOOK_ENV) for group in groups]


def _links_args(links: Iterable[tuple[str, str]], flag: str = "--link") -> list[str]:
    args: list[str] = []
    seen: set[tuple[str, str]] = set()
    for link in sorted(links, key=lambda pair: (pair[1], pair[0])):
        if link not in seen:
            seen.add(link)
            args += [flag, f"{link[0]}::{link[1]}"]
    return args


# ------------------------------------------------------------------------------ common edits


def _library_links(inv: Inventory) -> list[tuple[str, str]]:
    """Symlinks the driver's libraries need in a container (nvidia-ctk's rules)."""
    version = inv.driver_version
    links: list[tuple[str, str]] = []
    for lib in inv.libraries:
        folder, name = os.path.split(lib.path)
        if lib.soname and lib.soname != name and lib.soname in lib.links:
            links.append((name, f"{folder}/{lib.soname}"))
        stem = name.split(".so", 1)[0]
        if lib.soname and f"{stem}.so" in lib.links:
            links.append((lib.soname, f"{folder}/{stem}.so"))
        # Links nvidia-ctk always adds: loaders look for these names even where the
        # driver package does not install them.
        if name == f"libcuda.so.{version}":
            links.append(("libcuda.so.1", f"{folder}/libcuda.so"))
        elif name == f"libGLX_nvidia.so.{version}":
            links.append((name, f"{folder}/libGLX_indirect.so.0"))
        elif name == f"libnvidia-opticalflow.so.{version}":
            links.append(("libnvidia-opticalflow.so.1", f"{folder}/libnvidia-opticalflow.so"))
    return links


def _graphics_links(inv: Inventory) -> list[tuple[str, str]]:
    version = inv.driver_version
    links: list[tuple[str, str]] = []
    for lib in inv.libraries:
        folder, name = os.path.split(lib.path)
        if name == f"libnvidia-allocator.so.{version}":
            links.append(("../libnvidia-allocator.so.1", f"{folder}/gbm/nvidia-drm_gbm.so"))
        elif name == f"libnvidia-vulkan-producer.so.{version}":
            links.append((name, f"{folder}/libnvidia-vulkan-producer.so"))
    for file in inv.files:
        folder, name = os.path.split(file.container_path)
        if file.kind == "xorg" and name == f"libglxserver_nvidia.so.{version}":
            links.append((name, f"{folder}/libglxserver_nvidia.so"))
    return links


def _common_edits(inv: Inventory, opts: Options) -> _Edits:
    edits = _Edits()
    if opts.mode == "imex":
        edits.env.append("NVIDIA_VISIBLE_DEVICES=void")
        return edits
    graphics = opts.mode == "nvml"
    if inv.library_dirs:
        edits.env.append("NVIDIA_CTK_LIBCUDA_DIR=" + ":".join(inv.library_dirs))
    edits.env.append("NVIDIA_VISIBLE_DEVICES=void")
    if opts.mode == "nvml":
        for path in CONTROL_NODES:
            node = inv.node(path)
            if node is not None:
                edits.add_node(node, opts)
    for lib in inv.libraries:
        edits.mounts[lib.path] = (host_path(inv.driver_root, lib.path), RO_OPTIONS)
    for file in inv.files:
        if not graphics and file.kind in GRAPHICS_KINDS:
            continue
        options = IPC_OPTIONS if file.kind == "ipc" else RO_OPTIONS
        edits.mounts.setdefault(
            file.container_path, (host_path(inv.driver_root, file.path), options)
        )
    links = _library_links(inv)
    if graphics:
        links = _graphics_links(inv) + links
    if links:
        edits.add_action(opts, "create-symlinks", _links_args(links))
    if inv.libraries:
        edits.add_action(opts, "enable-cuda-compat", ["--host-driver-version", inv.driver_version])
        folders: list[str] = []
        for lib in inv.libraries:
            folder = os.path.dirname(lib.path)
            if folder not in folders:
                folders.append(folder)
        args = ["--ldconfig-path", opts.ldconfig_path] if opts.ldconfig_path else []
        for folder in sorted(folders):
            args += ["--folder", folder]
        edits.add_action(opts, "update-ldcache", args)
    if opts.mode == "nvml":
        # Management containers are the ones allowed to create device nodes.
        edits.add_action(opts, "disable-device-node-modification", [])
        edits.add_action(opts, "update-application-profile", [])
    return edits


# ------------------------------------------------------------------------------------ devices


class _Device(NamedTuple):
    names: tuple[str, ...]
    edits: _Edits


def _gpu_edits(
    inv: Inventory, nodes: dict[str, Node], gpu: Gpu, opts: Options, notes: list[str]
) -> _Edits | None:
    edits = _Edits()
    main = nodes.get(f"/dev/nvidia{gpu.minor}")
    if main is None:
        notes.append(
            f"GPU {gpu.nvml_index} ({gpu.uuid}, {gpu.pci}) left out: "
            f"/dev/nvidia{gpu.minor} is missing under {inv.dev_root}"
        )
        return None
    edits.add_node(main, opts)
    drm = [node for node in (nodes.get(path) for path in gpu.drm) if node is not None]
    for node in drm:
        edits.add_node(node, opts)
    present = {os.path.basename(node.path) for node in drm}
    links = [
        (link.target, link.path) for link in gpu.by_path if os.path.basename(link.target) in present
    ]
    if links:
        # Made by the common hook only in containers given these nodes (see build()).
        edits.add_action(opts, "create-symlinks", _links_args(links, "--link-if-target"))
    if drm:
        edits.add_action(opts, "chmod", ["--mode", "755", "--path", "/dev/dri"])
    return edits


def _mig_edits(
    inv: Inventory,
    nodes: dict[str, Node],
    gpu: Gpu,
    mig: MigDevice,
    opts: Options,
    notes: list[str],
) -> _Edits | None:
    edits = _Edits()
    paths = (f"/dev/nvidia{gpu.minor}", *mig.caps)
    missing = [path for path in paths if path not in nodes]
    if missing or not mig.caps:
        why = (
            f"{', '.join(missing)} missing under {inv.dev_root}"
            if missing
            else "its caps are not in /proc/driver/nvidia-caps/mig-minors"
        )
        notes.append(
            f"MIG device {gpu.nvml_index}:{mig.mig_index} ({mig.uuid}) left out: {why}; "
            "a container could not use it"
        )
        return None
    for path in paths:
        edits.add_node(nodes[path], opts)
    return edits


def _selected(ids: set[str], opts: Options) -> bool:
    return "all" in opts.device_ids or bool(ids & set(opts.device_ids))


def _check_ids(known: set[str], opts: Options, what: str) -> None:
    for device_id in opts.device_ids:
        if device_id not in ("all", "none") and device_id not in known:
            raise BuildError(
                f"--device-id {device_id!r}: no such {what} on this host "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )


def _nvml_devices(inv: Inventory, opts: Options, notes: list[str]) -> list[_Device]:
    nodes = {node.path: node for node in inv.nodes}
    known: set[str] = set()
    for gpu in inv.gpus:
        known |= naming.gpu_ids(gpu)
        for mig in gpu.migs:
            known |= naming.mig_ids(gpu, mig)
    _check_ids(known, opts, "GPU or MIG device")
    devices: list[_Device] = []
    for gpu in inv.gpus:
        if gpu.error:
            uuid, pci = gpu.uuid or "UUID unknown", gpu.pci or "PCI id unknown"
            notes.append(f"GPU {gpu.nvml_index} ({uuid}, {pci}) left out: {gpu.error}")
            continue
        whole = _selected(naming.gpu_ids(gpu), opts)
        if gpu.mig_enabled:
            for mig in gpu.migs:
                if whole or _selected(naming.mig_ids(gpu, mig), opts):
                    edits = _mig_edits(inv, nodes, gpu, mig, opts, notes)
                    if edits is not None:
                        names = tuple(naming.mig_name(s, gpu, mig) for s in opts.strategies)
                        devices.append(_Device(names, edits))
        elif whole:
            edits = _gpu_edits(inv, nodes, gpu, opts, notes)
            if edits is not None:
                names = tuple(naming.gpu_name(s, gpu) for s in opts.strategies)
                devices.append(_Device(names, edits))
    return devices


def _management_devices(inv: Inventory, opts: Options) -> list[_Device]:
    edits = _Edits()
    for node in inv.nodes:
        name = node.path[len("/dev/") :]
        if name.startswith(("nvidia-fs", "nvidia-nvswitch", "nvidia-nvlink", "dri/")):
            continue
        if name.startswith("nvidia"):
            edits.add_node(node, opts)
    if any(node.startswith("/dev/nvidia-caps/") for node in edits.nodes):
        edits.add_action(opts, "chmod", ["--mode", "755", "--path", "/dev/nvidia-caps"])
    return [_Device(("all",), edits)] if edits.nodes else []


def _imex_devices(inv: Inventory, opts: Options) -> list[_Device]:
    channels = [node for node in inv.nodes if node.path.startswith(IMEX_DIR + "channel")]
    known = set()
    for node in channels:
        number = node.path[len(IMEX_DIR + "channel") :]
        known |= {number, f"channel{number}"}
    _check_ids(known, opts, "IMEX channel")
    devices = []
    for node in channels:
        number = node.path[len(IMEX_DIR + "channel") :]
        if _selected({number, f"channel{number}"}, opts):
            edits = _Edits()
            edits.add_node(node, opts)
            devices.append(_Device((number,), edits))
    return devices


# --------------------------------------------------------------------------------- the spec


def build(inv: Inventory, opts: Options) -> Built:
    """The CDI spec for `inv` under `opts`; BuildError for impossible requests."""
    if opts.mode not in MODES:
        raise BuildError(f"--mode {opts.mode!r}: not one of {', '.join(MODES)}")
    notes: list[str] = []
    if opts.mode == "nvml":
        found = _nvml_devices(inv, opts, notes)
    elif opts.mode == "management":
        found = _management_devices(inv, opts) if "none" not in opts.device_ids else []
    else:
        found = _imex_devices(inv, opts)
    always_host_path = opts.mode == "imex"
    # One hook process per container: the devices' actions (DRM by-path links, chmod) join the
    # common hook, which derives from the container's device nodes what applies to it.
    device_actions = [action for device in found for action in device.edits.actions]
    for device in found:
        device.edits.actions = []
    devices: list[Device] = []
    for device in found:
        edits = device.edits.to_model(inv, opts, always_host_path)
        devices.extend(Device(name, edits) for name in device.names)
    names = {device.name for device in devices}
    if opts.all_device and found and "none" not in opts.device_ids and "all" not in names:
        merged = _Edits()
        for device in found:
            merged.merge(device.edits)
        devices.append(Device("all", merged.to_model(inv, opts, always_host_path)))
    devices.sort(key=lambda device: device.name.encode())
    common = _common_edits(inv, opts)
    common.actions = _merge_actions(common.actions + device_actions)
    spec = Spec("", f"{opts.vendor}/{opts.cls}", devices, common.to_model(inv, opts))
    version, reason = minimum_requirement(spec)
    gids = sorted(
        {gid for d in devices for gid in d.container_edits.additional_gids} | {*common.gids}
    )
    return Built(attrs.evolve(spec, version=version), reason, tuple(gids), tuple(notes))
