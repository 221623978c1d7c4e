"""Health and interconnect through the fake libnvidia-ml.so.1 (real pynvml): NVML events
injected while the plugin runs reach the kubelet stand-in's ListAndWatch stream, and
GetPreferredAllocation follows the NVLinks, PCIe switches and NUMA nodes NVML and sysfs report."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from device_plugin import topology
from device_plugin.api import HEALTHY, UNHEALTHY
from tests.device_plugin.kubelet import FakeKubelet
from tests.device_plugin.support import Plugin
from tests.require import need_root

GPU = "nvidia.com/gpu"


@pytest.fixture
def served(
    fakehost: Callable[..., Any], tmp_path: Path
) -> Iterator[Callable[..., tuple[Any, FakeKubelet, Plugin]]]:
    """Factory: (host, kubelet stand-in, plugin) for a topology, the plugin registered."""
    need_root()  # the fake host's device nodes
    running: list[tuple[FakeKubelet, Plugin]] = []

    def make(
        name: str, *args: str, env: dict[str, str] | None = None, **build: Any
    ) -> tuple[Any, FakeKubelet, Plugin]:
        host = fakehost(name, **build)
        n = len(running)
        kubelet = FakeKubelet(tmp_path / f"kubelet{n}").start()
        argv = [*host.generate_argv[2:], "--kubelet-socket", str(kubelet.socket), *args]
        plugin = Plugin(argv, tmp_path / f"plugin{n}.log", env={**host.env, **(env or {})})
        running.append((kubelet, plugin))
        kubelet.wait_for(lambda: kubelet.registrations, what="registration")
        plugin.wait_log("health checks on: XID events and presence")
        return host, kubelet, plugin

    try:
        yield make
    finally:
        for kubelet, plugin in running:
            plugin.stop()
            kubelet.stop()


def health(kubelet: FakeKubelet, resource: str) -> dict[str, str]:
    return {d.ID: d.health for d in kubelet.devices(resource)}


def wait_health(kubelet: FakeKubelet, resource: str, want: dict[str, str]) -> None:
    kubelet.wait_for(
        lambda: all(health(kubelet, resource).get(i) == h for i, h in want.items()),
        what=f"{resource} health {want}",
    )


def uuids(host: Any) -> list[str]:
    return [g.uuid for g in host.topology.gpus]


def test_xid_marks_the_gpu_and_allocate_refuses_it(served: Callable[..., Any]) -> None:
    host, kubelet, plugin = served("dgx-a100")
    gpus = uuids(host)
    wait_health(kubelet, GPU, dict.fromkeys(gpus, HEALTHY))
    plugin.wait_log("registered nvidia.com/gpu")
    host.events.xid(3, 13)  # an application error: skipped
    host.events.xid(4, 48)
    wait_health(kubelet, GPU, {gpus[4]: UNHEALTHY})
    assert health(kubelet, GPU)[gpus[3]] == HEALTHY
    plugin.wait_log(f"{gpus[4]} is unhealthy: XID 48 (double-bit ECC error)")
    plugin.wait_log("XID 13 on " + gpus[3] + " skipped")
    with pytest.raises(grpc.RpcError) as caught:
        kubelet.allocate_ids(GPU, [gpus[4]])
    assert f"device {gpus[4]} is unhealthy: XID 48" in caught.value.details()
    ids, _ = kubelet.allocate(GPU, 7)
    assert gpus[4] not in ids


def test_xid_on_a_mig_device_marks_only_it(served: Callable[..., Any]) -> None:
    host, kubelet, _ = served("dgx-a100-mig", "--mig-strategy", "mixed")
    small = "nvidia.com/mig-1g.5gb"
    kubelet.wait_for(lambda: len(kubelet.lists) == 6, what="6 resources listed")
    first, second = (m.uuid for m in host.topology.gpus[0].mig_devices if "1g.5gb" in m.name)
    host.events.xid("0:3", 94)  # MIG device 3 of GPU 0: GI 14
    wait_health(kubelet, small, {second: UNHEALTHY})
    assert health(kubelet, small)[first] == HEALTHY
    host.events.xid(1, 79)  # the whole GPU 1: every MIG device on it
    for resource in ("nvidia.com/mig-1c.3g.20gb", "nvidia.com/mig-2c.3g.20gb"):
        wait_health(kubelet, resource, dict.fromkeys(health(kubelet, resource), UNHEALTHY))
    on_gpu0, on_gpu1 = (
        m.uuid
        for g in (0, 1)
        for m in host.topology.gpus[g].mig_devices
        if m.name.endswith(" 3g.20gb")
    )
    wait_health(kubelet, "nvidia.com/mig-3g.20gb", {on_gpu0: HEALTHY, on_gpu1: UNHEALTHY})


def test_a_lost_gpu_comes_back_healthy(served: Callable[..., Any]) -> None:
    host, kubelet, plugin = served("dgx-a100")
    gpus = uuids(host)
    wait_health(kubelet, GPU, dict.fromkeys(gpus, HEALTHY))
    host.events.lose(5, xid=None)
    wait_health(kubelet, GPU, {gpus[5]: UNHEALTHY})
    plugin.wait_log(f"{gpus[5]} is unhealthy: NVML does not find it")
    host.events.recover(5)
    wait_health(kubelet, GPU, {gpus[5]: HEALTHY})
    plugin.wait_log(f"{gpus[5]} is healthy again")
    # and its events are watched again
    host.events.xid(5, 48)
    wait_health(kubelet, GPU, {gpus[5]: UNHEALTHY})


def test_a_failing_event_wait_marks_all_until_it_works(served: Callable[..., Any]) -> None:
    host, kubelet, plugin = served("dgx-a100")
    gpus = uuids(host)
    wait_health(kubelet, GPU, dict.fromkeys(gpus, HEALTHY))
    host.events.fail_wait("UNKNOWN")
    plugin.wait_log("NVML event wait failing")
    wait_health(kubelet, GPU, dict.fromkeys(gpus, HEALTHY))  # the next wait works again
    plugin.wait_log("NVML event wait works again")
    lists = [[d.health for d in devices] for _, devices in kubelet.lists[GPU]]
    assert [UNHEALTHY] * 8 in lists


def test_health_checks_can_be_disabled_as_nvidia_does(served: Callable[..., Any]) -> None:
    host, kubelet, _ = served("dgx-a100", env={"DP_DISABLE_HEALTHCHECKS": "48"})
    gpus = uuids(host)
    host.events.xid(2, 48)
    host.events.xid(2, 13)
    host.events.xid(6, 31)
    host.events.xid(1, 79)
    wait_health(kubelet, GPU, {gpus[1]: UNHEALTHY})
    assert [i for i, h in health(kubelet, GPU).items() if h == UNHEALTHY] == [gpus[1]]


def test_links_from_the_fake_nvml(fake_nvml: Callable[..., Any]) -> None:
    import pynvml

    from cdi.nvidia.discover import discover
    from cdi.nvidia.roots import Roots

    need_root()
    host = fake_nvml("pcie-nvlink-pairs")
    roots = Roots(str(host.driver_root), str(host.dev_root), proc_sys_root=str(host.proc_sys_root))
    gpus = discover(roots).gpus
    numa = topology.numa_nodes(str(host.proc_sys_root), gpus)
    assert numa == {g.pci: 0 if g.nvml_index < 4 else 1 for g in gpus}
    pynvml.nvmlInit()
    try:
        links = topology.from_nvml(pynvml, gpus, numa)
    finally:
        pynvml.nvmlShutdown()
    assert links.nvlinks == {(0, 3): 12, (1, 2): 12, (4, 7): 12, (5, 6): 12}
    assert links.levels[(0, 1)] == 10  # one PCIe switch
    assert links.levels[(0, 2)] == 30  # one host bridge
    assert links.levels[(0, 4)] == 50  # across NUMA nodes
    best = max(itertools.combinations(range(8), 2), key=lambda p: links.score(*p))
    assert best == (0, 3)


def test_preferred_allocation_follows_nvlink_then_switch_then_numa(
    served: Callable[..., Any],
) -> None:
    host, kubelet, _ = served("pcie-nvlink-pairs")
    g = uuids(host)
    kubelet.wait_for(lambda: len(kubelet.healthy(GPU)) == 8, what="8 GPUs")
    # NVLink bridges: 0-3, 1-2, 4-7, 5-6; PCIe switches: {0, 1}, {2, 3}, {4, 5}, {6, 7};
    # NUMA nodes: 0-3, 4-7
    assert kubelet.preferred(GPU, g, [g[0]], 2) == [g[0], g[3]]  # NVLink
    assert kubelet.preferred(GPU, [g[0], g[1], g[2], g[4]], [g[0]], 2) == [g[0], g[1]]  # switch
    assert kubelet.preferred(GPU, [g[0], g[2], g[4], g[6]], [g[0]], 2) == [g[0], g[2]]  # NUMA
    assert kubelet.preferred(GPU, g, [], 4) == [
        g[0],
        g[1],
        g[2],
        g[3],
    ]  # two NVLink pairs, one node
    ids, _ = kubelet.allocate(GPU, 2)
    assert sorted(ids) in ([g[0], g[3]], [g[1], g[2]], [g[4], g[7]], [g[5], g[6]])


def test_numa_nodes_reach_kubelet(served: Callable[..., Any]) -> None:
    host, kubelet, _ = served("dgx-a100")
    kubelet.wait_for(lambda: len(kubelet.devices(GPU)) == 8, what="8 GPUs")
    nodes = {d.ID: [n.ID for n in d.topology.nodes] for d in kubelet.devices(GPU)}
    assert nodes == {u: [0 if i < 4 else 1] for i, u in enumerate(uuids(host))}


def test_a_gpu_failing_discovery_is_offered_unhealthy_without_a_loop(
    served: Callable[..., Any],
) -> None:
    # NVML fails GPU 2's minor number for good: it cannot be in the spec, but it answers the
    # health probe, which asks for one discovery more
    errors = [{"call": "nvmlDeviceGetMinorNumber", "device": 2, "error": "UNKNOWN"}]
    host, kubelet, plugin = served("dgx-a100", errors=errors)
    gpus = uuids(host)
    wait_health(kubelet, GPU, {gpus[2]: UNHEALTHY, gpus[1]: HEALTHY})
    plugin.wait_log("node discovered again: the same devices")
    time.sleep(2.5)
    assert plugin.log().count("node discovered again") == 1
    assert health(kubelet, GPU)[gpus[2]] == UNHEALTHY
    with pytest.raises(grpc.RpcError, match="NVML reports it failing"):
        kubelet.allocate_ids(GPU, [gpus[2]])
