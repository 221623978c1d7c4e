"""How closely GPUs are connected, from NVML (NVLink, PCIe common ancestor) and sysfs (NUMA).

A pair's score: 100 per NVLink between them (through NVSwitches: the links both have to the
fabric), plus the PCIe distance (same board 50, one switch 40, several switches 30, one host
bridge 20, one NUMA node 10, across the system 0); without an NVML answer for the PCIe distance,
10 when sysfs puts both on one NUMA node. Every NVML call here is optional: a GPU or driver
that lacks one simply scores lower.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from cdi.nvidia.inventory import Gpu
from cdi.nvidia.nvml import pci_id

NVLINK = 100
# nvmlGpuTopologyLevel_t -> score
LEVELS = {0: 50, 10: 40, 20: 30, 30: 20, 40: 10, 50: 0}
SAME_NODE = LEVELS[40]
MAX_LINKS = 36  # NVML_NVLINK_MAX_LINKS
NVLINK_SWITCH = 2  # nvmlIntNvLinkDeviceType_t NVML_NVLINK_DEVICE_TYPE_SWITCH


@attrs.frozen
class Links:
    """Pairwise facts by NVML index (pairs as (lower, higher))."""

    nvlinks: Mapping[tuple[int, int], int] = attrs.field(factory=dict)
    levels: Mapping[tuple[int, int], int] = attrs.field(factory=dict)
    numa: Mapping[int, int] = attrs.field(factory=dict)

    def score(self, a: int, b: int) -> int:
        """How well GPUs `a` and `b` are connected; higher is closer."""
        key = (min(a, b), max(a, b))
        value = NVLINK * self.nvlinks.get(key, 0)
        level = self.levels.get(key)
        if level is not None:
            return value + LEVELS.get(level, 0)
        node = self.numa.get(a)
        return value + (SAME_NODE if node is not None and node == self.numa.get(b) else 0)


def numa_nodes(host_root: str, gpus: Sequence[Gpu]) -> dict[str, int]:
    """The NUMA node of each GPU (by PCI address) that sysfs under `host_root` gives one."""
    out: dict[str, int] = {}
    for gpu in gpus:
        if not gpu.pci:
            continue
        path = os.path.join(host_root, "sys/bus/pci/devices", gpu.pci, "numa_node")
        try:
            with open(path, encoding="ascii") as stream:
                node = int(stream.read().strip())
        except (OSError, ValueError):
            continue
        if node >= 0:  # -1: the platform does not say
            out[gpu.pci] = node
    return out


def _optional(nv: Any, call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except nv.NVMLError:
        return None


def _fabric_links(
    nv: Any, handle: object, index_of: Mapping[str, int]
) -> tuple[dict[int, int], int]:
    """(links to each GPU by index, links to NVSwitches) of one GPU."""
    direct: dict[int, int] = {}
    switched = 0
    for link in range(MAX_LINKS):
        try:
            if not nv.nvmlDeviceGetNvLinkState(handle, link):
                continue
        except nv.NVMLError:
            break  # past the last link, or no NVLink at all
        remote = _optional(nv, nv.nvmlDeviceGetNvLinkRemotePciInfo, handle, link)
        peer = index_of.get(pci_id(remote.busId)) if remote is not None else None
        if peer is not None:
            direct[peer] = direct.get(peer, 0) + 1
            continue
        kind = _optional(nv, nv.nvmlDeviceGetNvLinkRemoteDeviceType, handle, link)
        if kind in (None, NVLINK_SWITCH):  # not a GPU of ours: the fabric
            switched += 1
    return direct, switched


def from_nvml(nv: Any, gpus: Sequence[Gpu], numa: Mapping[str, int]) -> Links:
    """The Links of `gpus` as NVML (the pynvml module, initialised) reports them."""
    handles: dict[int, object] = {}
    for gpu in gpus:
        handle = _optional(nv, nv.nvmlDeviceGetHandleByUUID, gpu.uuid) if gpu.uuid else None
        if handle is not None:
            handles[gpu.nvml_index] = handle
    index_of = {gpu.pci: gpu.nvml_index for gpu in gpus if gpu.pci}
    fabric = {i: _fabric_links(nv, h, index_of) for i, h in handles.items()}
    nvlinks: dict[tuple[int, int], int] = {}
    levels: dict[tuple[int, int], int] = {}
    ordered = sorted(handles)
    for n, a in enumerate(ordered):
        for b in ordered[n + 1 :]:
            (direct_a, switched_a), (direct_b, switched_b) = fabric[a], fabric[b]
            count = max(direct_a.get(b, 0), direct_b.get(a, 0)) + min(switched_a, switched_b)
            if count == 0:
                nvlink_p2p = nv.NVML_P2P_CAPS_INDEX_NVLINK
                p2p = _optional(nv, nv.nvmlDeviceGetP2PStatus, handles[a], handles[b], nvlink_p2p)
                count = 1 if p2p == nv.NVML_P2P_STATUS_OK else 0
            if count:
                nvlinks[(a, b)] = count
            level = _optional(nv, nv.nvmlDeviceGetTopologyCommonAncestor, handles[a], handles[b])
            if level is not None:
                levels[(a, b)] = int(level)
    return Links(nvlinks, levels, numa_by_index(gpus, numa))


def numa_by_index(gpus: Sequence[Gpu], numa: Mapping[str, int]) -> dict[int, int]:
    """NUMA nodes by NVML index, from NUMA nodes by PCI address."""
    return {g.nvml_index: numa[g.pci] for g in gpus if g.pci in numa}
