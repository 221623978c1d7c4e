"""Interconnect through the real pynvml: NVLinks, PCIe distance, P2P, NUMA nodes in sysfs.

Expectations here are written by hand from the topology files' comments (nvmlview's comparison
covers every shipped topology against the Python model; this checks the model itself).
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pynvml
import pytest
from gpu_cdi_fakehost.builder import FakeHost
from gpu_cdi_fakehost.pytest_plugin import FakeHostFactory

INTERNAL, SINGLE, MULTIPLE = 0, 10, 20
HOSTBRIDGE, NODE, SYSTEM = 30, 40, 50
READ, WRITE, NVLINK, ATOMICS, PCI = range(5)  # NVML_P2P_CAPS_INDEX_*
OK, CHIPSET_NOT_SUPPORTED, IOH_TOPOLOGY_NOT_SUPPORTED, NOT_SUPPORTED = 0, 1, 3, 5
DEVICE_TYPE_GPU, DEVICE_TYPE_SWITCH = 0, 2


def gpu(i: int) -> Any:
    return pynvml.nvmlDeviceGetHandleByIndex(i)


def level(a: int, b: int) -> int:
    return int(pynvml.nvmlDeviceGetTopologyCommonAncestor(gpu(a), gpu(b)))


def p2p(a: int, b: int, cap: int) -> int:
    return int(pynvml.nvmlDeviceGetP2PStatus(gpu(a), gpu(b), cap))


def active_links(i: int) -> list[tuple[int, str]]:
    """(remote device type, remote bus id) of each active link, as go-gpuallocator walks them."""
    out = []
    for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
        try:
            if not pynvml.nvmlDeviceGetNvLinkState(gpu(i), link):
                continue
        except pynvml.NVMLError_NotSupported:
            continue
        remote = pynvml.nvmlDeviceGetNvLinkRemotePciInfo(gpu(i), link)
        out.append((pynvml.nvmlDeviceGetNvLinkRemoteDeviceType(gpu(i), link), remote.busId))
    return out


def sysfs_numa(host: FakeHost, i: int) -> int:
    bdf = host.topology.gpus[i].pci.sysfs
    return int((host.proc_sys_root / f"sys/bus/pci/devices/{bdf}/numa_node").read_text())


def test_dgx_a100_nvswitch_fabric(nvml_init: FakeHostFactory) -> None:
    host = nvml_init("dgx-a100")
    switches = [f"00000000:C{n}:00.0" for n in range(4, 10)]
    for i in range(8):
        # 12 links, two to each NVSwitch, none to a GPU directly
        links = active_links(i)
        assert {kind for kind, _ in links} == {DEVICE_TYPE_SWITCH}
        assert Counter(bus for _, bus in links) == dict.fromkeys(switches, 2)
        with pytest.raises(pynvml.NVMLError_NotSupported):
            pynvml.nvmlDeviceGetNvLinkState(gpu(i), 12)  # the A100 has 12 links
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetNvLinkState(gpu(0), pynvml.NVML_NVLINK_MAX_LINKS)
    assert pynvml.nvmlDeviceGetNvLinkVersion(gpu(0), 0) == 4  # NVML_NVLINK_VERSION_3_0
    caps = [pynvml.nvmlDeviceGetNvLinkCapability(gpu(0), 0, c) for c in range(6)]
    assert caps == [1, 0, 1, 0, 0, 1]  # P2P, no sysmem, P2P atomics, no sysmem atomics/SLI, valid
    # every pair is NVLinked through the fabric
    for a, b in itertools.permutations(range(8), 2):
        assert [p2p(a, b, c) for c in (READ, WRITE, NVLINK, ATOMICS)] == [OK] * 4, (a, b)
    assert [level(0, b) for b in range(8)] == [INTERNAL, MULTIPLE] + [NODE] * 2 + [SYSTEM] * 4
    assert level(6, 7) == MULTIPLE and level(7, 6) == MULTIPLE
    pcie = [p2p(0, b, PCI) for b in (1, 2, 4)]
    assert pcie == [OK, IOH_TOPOLOGY_NOT_SUPPORTED, CHIPSET_NOT_SUPPORTED]
    assert [sysfs_numa(host, i) for i in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert host.topology.extras.nvswitches == 6  # their device nodes follow the fabric
    assert (host.dev_root / "dev/nvidia-nvswitch5").exists() or not host.device_nodes


def test_pcie_server_where_the_choice_matters(nvml_init: FakeHostFactory) -> None:
    """The three criteria a device plugin ranks by each name different pairs on this host."""
    host = nvml_init("pcie-nvlink-pairs")
    pairs = list(itertools.combinations(range(8), 2))
    nvlinked = {p for p in pairs if p2p(*p, NVLINK) == OK}
    assert nvlinked == {(0, 3), (1, 2), (4, 7), (5, 6)}
    # point-to-point: the far end of each of GPU 0's 12 links is GPU 3
    bus3 = pynvml.nvmlDeviceGetPciInfo(gpu(3)).busId
    assert active_links(0) == [(DEVICE_TYPE_GPU, bus3)] * 12
    assert {p for p in pairs if level(*p) == SINGLE} == {(0, 1), (2, 3), (4, 5), (6, 7)}
    assert {p for p in pairs if level(*p) == HOSTBRIDGE} == {
        (0, 2), (0, 3), (1, 2), (1, 3), (4, 6), (4, 7), (5, 6), (5, 7)
    }  # fmt: skip
    numa = [sysfs_numa(host, i) for i in range(8)]
    assert numa == [0, 0, 0, 0, 1, 1, 1, 1]
    assert {p for p in pairs if level(*p) == SYSTEM} == {
        p for p in pairs if numa[p[0]] != numa[p[1]]
    }
    # PCIe P2P within a socket, not across; atomics only over NVLink
    assert [p2p(0, 1, PCI), p2p(0, 5, PCI), p2p(0, 5, READ)] == [OK] + [CHIPSET_NOT_SUPPORTED] * 2
    assert [p2p(0, 1, NVLINK), p2p(0, 1, ATOMICS), p2p(0, 3, ATOMICS)] == [NOT_SUPPORTED] * 2 + [OK]

    def best_pair(available: set[int]) -> tuple[int, int]:
        """NVLink first, then the same PCIe switch, then the same NUMA node."""
        return min(
            itertools.combinations(sorted(available), 2),
            key=lambda p: (p2p(*p, NVLINK) != OK, level(*p) > SINGLE, numa[p[0]] != numa[p[1]]),
        )

    assert best_pair({0, 1, 2}) == (1, 2)
    assert best_pair({0, 1, 4}) == (0, 1)
    assert best_pair({0, 2, 4}) == (0, 2)


def test_dgx_h100(nvml_init: FakeHostFactory) -> None:
    nvml_init("dgx-h100")
    links = active_links(0)
    assert len(links) == 18
    assert sorted(Counter(bus for _, bus in links).values()) == [4, 4, 5, 5]
    assert pynvml.nvmlDeviceGetNvLinkVersion(gpu(0), 17) == 6  # NVML_NVLINK_VERSION_4_0
    assert [level(0, b) for b in range(1, 8)] == [NODE] * 3 + [SYSTEM] * 4


def test_board_without_active_links(nvml_init: FakeHostFactory) -> None:
    host = nvml_init("workstation")  # an RTX A6000: 4 NVLinks, no bridge fitted
    h = gpu(0)
    assert [pynvml.nvmlDeviceGetNvLinkState(h, link) for link in range(4)] == [0] * 4
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetNvLinkState(h, 4)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetNvLinkRemotePciInfo(h, 0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetNvLinkRemoteDeviceType(h, 0)
    assert sysfs_numa(host, 0) == -1  # no NUMA information on this host
    assert level(0, 0) == INTERNAL
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceGetP2PStatus(h, h, NVLINK)


def test_numa_node_id_is_not_supported_on_pcie_gpus(nvml_init: FakeHostFactory) -> None:
    """NVML has it only for GPUs that are NUMA nodes themselves; x86 hosts read sysfs."""
    nvml_init("dgx-a100")
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetNumaNodeId(gpu(0))


def test_mig_devices_have_no_topology_of_their_own(nvml_init: FakeHostFactory) -> None:
    nvml_init("dgx-a100-mig")
    mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu(0), 0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetTopologyCommonAncestor(mig, gpu(2))
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetP2PStatus(gpu(2), mig, NVLINK)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetNvLinkState(mig, 0)
    # the parent GPUs keep their links and places
    assert len(active_links(0)) == 12 and level(0, 1) == MULTIPLE


def test_error_rules_and_lost_gpus_reach_both_handles(nvml_init: FakeHostFactory) -> None:
    rule = {"call": "nvmlDeviceGetP2PStatus", "device": 5, "error": "UNKNOWN", "times": 1}
    host = nvml_init("pcie-nvlink-pairs", errors=[rule])
    with pytest.raises(pynvml.NVMLError_Unknown):
        p2p(0, 5, READ)  # the rule names the second GPU
    assert p2p(0, 5, READ) == CHIPSET_NOT_SUPPORTED
    h6 = gpu(6)
    host.events.lose(6, xid=None)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlDeviceGetTopologyCommonAncestor(gpu(0), h6)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlDeviceGetNvLinkState(h6, 0)
