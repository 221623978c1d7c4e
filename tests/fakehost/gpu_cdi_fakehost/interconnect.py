"""What NVML reports about the interconnect of a topology: NVLinks, PCIe distance, P2P support.

Derived here once from the topology's NUMA nodes, PCIe paths and NVLink description, written
into the fake NVML file, and served as-is by the C library (specs/topology-format.md,
"Interconnect").
"""

from __future__ import annotations

import attrs

from gpu_cdi_fakehost.catalog import (
    NVLINK_DEVICE_TYPES,
    NVSWITCH_PCI_DEVICE_IDS,
    P2P_CAPS,
    P2P_STATUS,
    TOPOLOGY_LEVELS,
)
from gpu_cdi_fakehost.topology import Gpu, PciAddress, Topology


@attrs.frozen
class Link:
    """One active NVLink of a GPU and what is at its far end."""

    index: int
    remote_type: int  # NVML_NVLINK_DEVICE_TYPE_*
    remote_pci: PciAddress
    remote_pci_device_id: int
    remote_pci_subsystem_id: int
    peer: int | None  # the GPU at the far end (a bridge), None for a switch


def nvlinks(topo: Topology) -> tuple[tuple[Link, ...], ...]:
    """Per GPU, its active links: bridges first (in file order), then its links to the switches,
    spread over them round robin."""
    out: list[list[Link]] = [[] for _ in topo.gpus]
    for bridge in topo.nvlink.bridges:
        a, b = bridge.gpus
        for _ in range(bridge.links):
            for me, peer in ((a, b), (b, a)):
                g = topo.gpus[peer]
                links = out[me]
                links.append(
                    Link(len(links), NVLINK_DEVICE_TYPES["GPU"], g.pci, g.pci_device_id,
                         g.pci_subsystem_id, peer)
                )  # fmt: skip
    switches = topo.nvlink.nvswitches
    for g, links in zip(topo.gpus, out, strict=True):
        switch_id = NVSWITCH_PCI_DEVICE_IDS.get(g.architecture, NVSWITCH_PCI_DEVICE_IDS["ampere"])
        for i in range(topo.nvlink.links_per_gpu):
            sw = switches[i % len(switches)]
            links.append(Link(len(links), NVLINK_DEVICE_TYPES["SWITCH"], sw, switch_id, 0, None))
    return tuple(tuple(links) for links in out)


def nvlinked(topo: Topology, a: int, b: int) -> bool:
    """True when GPUs a and b reach each other over NVLink (a bridge or the switch fabric)."""
    if topo.nvlink.links_per_gpu:
        return True
    return any(set(br.gpus) == {a, b} for br in topo.nvlink.bridges)


def common_ancestor(a: Gpu, b: Gpu) -> int:
    """nvmlDeviceGetTopologyCommonAncestor: how far apart two GPUs are on PCIe."""
    if a.index == b.index:
        return TOPOLOGY_LEVELS["INTERNAL"]
    if a.numa_node != b.numa_node:
        return TOPOLOGY_LEVELS["SYSTEM"]
    if a.pcie_path[0] != b.pcie_path[0]:
        return TOPOLOGY_LEVELS["NODE"]
    shared = 1
    while (
        shared < min(len(a.pcie_path), len(b.pcie_path))
        and a.pcie_path[shared] == b.pcie_path[shared]
    ):
        shared += 1
    if shared == 1:
        return TOPOLOGY_LEVELS["HOSTBRIDGE"]
    # the path between them crosses the deepest shared switch and every switch below it
    crossed = 1 + (len(a.pcie_path) - shared) + (len(b.pcie_path) - shared)
    return TOPOLOGY_LEVELS["SINGLE" if crossed == 1 else "MULTIPLE"]


def p2p_status(topo: Topology, a: int, b: int) -> tuple[int, ...]:
    """nvmlDeviceGetP2PStatus for each NVML_P2P_CAPS_INDEX_* (P2P_CAPS order).

    Over NVLink everything is possible. Over PCIe, reads and writes work below one host bridge;
    across host bridges the chipset does not route them (IOH topology within a NUMA node,
    chipset across the SMP interconnect). NVLink and atomics need NVLink.
    """
    level = common_ancestor(topo.gpus[a], topo.gpus[b])
    if level <= TOPOLOGY_LEVELS["HOSTBRIDGE"]:
        pci = P2P_STATUS["OK"]
    elif level == TOPOLOGY_LEVELS["NODE"]:
        pci = P2P_STATUS["IOH_TOPOLOGY_NOT_SUPPORTED"]
    else:
        pci = P2P_STATUS["CHIPSET_NOT_SUPPORTED"]
    link = nvlinked(topo, a, b)
    ok, no = P2P_STATUS["OK"], P2P_STATUS["NOT_SUPPORTED"]
    status = {
        "READ": ok if link else pci,
        "WRITE": ok if link else pci,
        "NVLINK": ok if link else no,
        "ATOMICS": ok if link else no,
        "PCI": pci,
    }
    return tuple(status[c] for c in P2P_CAPS)
