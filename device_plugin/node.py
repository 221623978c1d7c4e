"""What the plugin knows about its node at one moment: discovered once, replaced on a change.

The generator's discovery gives the Inventory; the generator's pure build gives the CDI spec
(as `gpu-cdi generate` would write it, with the plugin's kind and hook path), whose device
names the resources must resolve in; NVML gives the interconnect and a few facts for node
labels. With --inventory there is no NVML: no links, no facts, no health checks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import attrs

from cdi.nvidia.inventory import Inventory
from device_plugin.allocate import Nodes
from device_plugin.config import Settings
from device_plugin.resources import Resource
from device_plugin.topology import Links


@attrs.frozen
class GpuFacts:
    """Per-GPU facts for node labels (what NVML tells beyond the Inventory)."""

    memory_mib: int | None = None
    compute: tuple[int, int] | None = None
    mig_capable: bool = False


@attrs.frozen
class Facts:
    """Node-wide facts for node labels."""

    cuda: tuple[int, int] | None = None  # CUDA driver API version, e.g. (12, 4)
    gpus: tuple[GpuFacts, ...] = ()  # by NVML index


@attrs.frozen
class Node:
    """One snapshot of the node and what the plugin offers from it. Of the spec only what is
    used is kept (the plugin lives long; a spec of 448 MIG devices is megabytes of objects)."""

    inventory: Inventory
    resources: tuple[Resource, ...]
    notes: tuple[str, ...]
    links: Links
    facts: Facts | None
    library: str | None  # NVML for the health watcher; None with --inventory
    spec_text: str | None = None  # with --cdi-spec-file: the spec to write
    spec_nodes: Mapping[str, Nodes] | None = None  # with --pass-device-specs

    def fingerprint(self) -> tuple[object, ...]:
        """What, when it changes, needs new servers (devices and their names)."""
        return tuple((r.name, r.devices) for r in self.resources)


def _inventory(settings: Settings) -> tuple[Inventory, str | None]:
    from cdi.nvidia import inventory
    from cdi.nvidia.discover import discover, nvml_library

    if settings.inventory:
        inv = inventory.load(settings.inventory)
        # the roots say where the inventory's files are on the node the names are for
        if settings.driver_root != "/" or settings.dev_root:
            inv = inv._replace(
                driver_root=settings.driver_root,
                dev_root=settings.dev_root or settings.driver_root,
            )
        return inv, None
    return discover(settings.roots, "nvml"), nvml_library(settings.roots)


def _facts(nv: Any, inv: Inventory) -> Facts:
    def optional(call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except nv.NVMLError:
            return None

    cuda = optional(nv.nvmlSystemGetCudaDriverVersion)
    gpus = []
    for gpu in inv.gpus:
        handle = optional(nv.nvmlDeviceGetHandleByUUID, gpu.uuid) if gpu.uuid else None
        if handle is None:
            gpus.append(GpuFacts())
            continue
        memory = optional(nv.nvmlDeviceGetMemoryInfo, handle)
        compute = optional(nv.nvmlDeviceGetCudaComputeCapability, handle)
        mig = optional(nv.nvmlDeviceGetMigMode, handle)
        gpus.append(
            GpuFacts(
                memory_mib=int(memory.total) >> 20 if memory is not None else None,
                compute=(int(compute[0]), int(compute[1])) if compute is not None else None,
                mig_capable=mig is not None,
            )
        )
    return Facts(
        cuda=(cuda // 1000, cuda % 1000 // 10) if isinstance(cuda, int) else None,
        gpus=tuple(gpus),
    )


def spec_options(settings: Settings) -> Any:
    """The build options of the spec the device names must resolve in: generate's defaults,
    with the plugin's kind and hook path."""
    from cdi.node.hookpath import default_hook_path
    from cdi.nvidia.build import Options

    return Options(
        vendor=settings.cdi_vendor,
        cls=settings.cdi_class,
        hook_path=settings.hook_path or default_hook_path(),
    )


def discover_node(settings: Settings) -> Node:
    """Discover the node; DiscoveryError, InventoryError or ResourceError say what is wrong."""
    from cdi.nvidia.build import build
    from cdi.nvidia.nvml import Nvml, NvmlError
    from device_plugin import resources, topology

    inv, library = _inventory(settings)
    options = spec_options(settings)
    text = None
    if settings.cdi_spec_file:
        from cdi.nvidia import generate

        built = build(inv, options)
        target = generate.output_target(settings.cdi_spec_file, None, False)
        text = generate.render(built, target.fmt, None)
    else:  # whether a device is in the spec does not depend on how it is named
        built = build(inv, options._replace(strategies=(settings.device_id_strategy,)))
    names = {device.name for device in built.spec.devices}
    nodes = spec_nodes(built.spec) if settings.pass_device_specs else None
    del built
    proc_sys = settings.roots.locate().proc_sys if library else ""
    numa = topology.numa_nodes(proc_sys, inv.gpus) if library else {}
    offered, notes = resources.build(inv, settings, names, numa)
    links = topology.Links(numa=topology.numa_by_index(inv.gpus, numa))
    facts = None
    if library is not None:
        with contextlib.suppress(NvmlError), Nvml(library) as nvml:
            links = topology.from_nvml(nvml.nv, inv.gpus, numa)
            facts = _facts(nvml.nv, inv)
    # the driver's files and /dev nodes are in the spec; what stays is the GPUs and the version
    kept = inv._replace(nodes=(), libraries=(), library_dirs=(), files=())
    return Node(kept, offered, notes, links, facts, library, text, nodes)


def init_errors() -> tuple[type[Exception], ...]:
    """What discovery raises for a node it cannot serve (each with one line)."""
    from cdi.nvidia.discover import DiscoveryError
    from cdi.nvidia.generate import GenerateError
    from cdi.nvidia.inventory import InventoryError
    from device_plugin.resources import ResourceError

    return (DiscoveryError, InventoryError, ResourceError, GenerateError)


DISCOVERY_TIMEOUT = 300


class DiscoveryFailed(Exception):
    """Discovery in the child process failed; the message is its one line."""


def discover_apart(settings: Settings) -> Node:
    """`discover_node` in a child process (its stderr is ours). The plugin lives as long as the
    node: this way it never holds discovery's modules and garbage (megabytes on big hosts), and
    a driver that crashes discovery does not take the serving process with it."""
    import pickle
    import subprocess
    import sys

    try:
        proc = subprocess.run(
            [sys.executable, "-m", "device_plugin.node"],
            input=pickle.dumps(settings),
            stdout=subprocess.PIPE,
            timeout=DISCOVERY_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DiscoveryFailed(
            f"node discovery did not finish in {DISCOVERY_TIMEOUT} s (NVML hanging?)"
        ) from None
    if proc.returncode != 0:
        raise DiscoveryFailed(f"node discovery failed (exit status {proc.returncode}, see above)")
    # our own child, same interpreter and code: pickle is the plain way back
    result = pickle.loads(proc.stdout)
    if isinstance(result, str):
        raise DiscoveryFailed(result)
    node: Node = result
    return node


def _child() -> int:
    import os
    import pickle
    import sys

    settings = pickle.load(sys.stdin.buffer)
    # the answer goes to the real stdout; anything a library prints goes to stderr
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    result: Node | str
    try:
        result = discover_node(settings)
    except init_errors() as error:
        result = str(error)
    with answer:
        answer.write(pickle.dumps(result))
    return 0


def spec_nodes(spec: Any) -> dict[str, Nodes]:
    """Device nodes of a `cdi.spec.Spec` by device name; "" holds the spec-wide ones."""

    def nodes(edits: Any) -> Nodes:
        return tuple((n.path, n.host_path or n.path) for n in edits.device_nodes)

    out = {device.name: nodes(device.container_edits) for device in spec.devices}
    out[""] = nodes(spec.container_edits)
    return out


def write_spec(text: str, path: str) -> str:
    """Write spec `text` to `path` as `gpu-cdi generate --output path` would; what happened,
    as generate says it. WriteError when it cannot."""
    from cdi.nvidia import generate
    from cdi.writer import write_text

    target = generate.output_target(path, None, False).path
    return f"{target}: {'written' if write_text(target, text) else 'unchanged, not rewritten'}"


if __name__ == "__main__":
    # run the importable twin of this module, so the pickle names device_plugin.node.Node
    from device_plugin import node as importable

    raise SystemExit(importable._child())
