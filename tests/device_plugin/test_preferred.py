"""GetPreferredAllocation's choice on described interconnects."""

from __future__ import annotations

import itertools

import pytest

from device_plugin.preferred import PreferenceError, preferred
from device_plugin.resources import Device, Resource
from device_plugin.topology import LEVELS, Links


def gpus(n: int, replicas: int = 1) -> Resource:
    devices = []
    for i in range(n):
        for r in range(replicas):
            suffix = f"::{r}" if replicas > 1 else ""
            devices.append(
                Device(
                    f"g{i}{suffix}",
                    f"g{i}",
                    f"g{i}",
                    f"g{i}",
                    i,
                    replica=r if replicas > 1 else None,
                )
            )
    return Resource("nvidia.com/gpu", tuple(devices), replicas)


def nvlink_pairs(*pairs: tuple[int, int], count: int = 4) -> Links:
    return Links(nvlinks={p: count for p in pairs})


def test_nvlink_pairs_win() -> None:
    # 0-5 and 2-7 are NVLink pairs; everything else is just PCIe
    links = nvlink_pairs((0, 5), (2, 7))
    ids = [f"g{i}" for i in range(8)]
    assert preferred(gpus(8), ids, [], 2, links.score) == ["g0", "g5"]
    assert preferred(gpus(8), ids, ["g7"], 2, links.score) == ["g2", "g7"]
    assert preferred(gpus(8), ids, [], 4, links.score) == ["g0", "g2", "g5", "g7"]
    # with g0 gone the other pair is the best
    assert preferred(gpus(8), ids[1:], [], 2, links.score) == ["g2", "g7"]


def test_pcie_switch_before_host_bridge_before_numa() -> None:
    levels = {}
    for a, b in itertools.combinations(range(4), 2):
        levels[(a, b)] = 50  # across the system
    levels[(1, 3)] = 10  # one PCIe switch
    levels[(0, 2)] = 30  # one host bridge
    links = Links(levels=levels)
    ids = ["g0", "g1", "g2", "g3"]
    assert preferred(gpus(4), ids, [], 2, links.score) == ["g1", "g3"]
    assert preferred(gpus(4), ["g0", "g2", "g3"], [], 2, links.score) == ["g0", "g2"]
    assert LEVELS[10] > LEVELS[30] > LEVELS[40] > LEVELS[50]
    numa = Links(numa={0: 1, 1: 0, 2: 1, 3: 0})
    assert preferred(gpus(4), ["g0", "g1", "g2"], [], 2, numa.score) == ["g0", "g2"]


def test_nvswitch_fabric_counts_as_nvlink() -> None:
    links = Links(nvlinks={(0, 1): 12}, levels={(0, 1): 50, (1, 2): 10, (0, 2): 10})
    assert preferred(gpus(3), ["g0", "g1", "g2"], [], 2, links.score) == ["g0", "g1"]


def test_replicas_spread_over_gpus_least_used_first() -> None:
    shared = gpus(3, replicas=4)
    # GPU 0 has two replicas taken already, GPU 1 one
    available = ["g0::2", "g0::3", "g1::1", "g1::2", "g1::3", "g2::0", "g2::1", "g2::2", "g2::3"]
    assert preferred(shared, available, [], 1, Links().score) == ["g2::0"]
    assert preferred(shared, available, [], 2, Links().score) == ["g1::1", "g2::0"]
    assert preferred(shared, available, [], 3, Links().score) == ["g0::2", "g1::1", "g2::0"]


def test_must_include_and_impossible_requests() -> None:
    ids = ["g0", "g1", "g2"]
    assert preferred(gpus(3), ids, ["g0", "g2"], 2, Links().score) == ["g0", "g2"]
    with pytest.raises(PreferenceError, match="cannot choose 4 devices from 3 available"):
        preferred(gpus(3), ids, [], 4, Links().score)
    with pytest.raises(PreferenceError, match="unknown device 'g9'"):
        preferred(gpus(3), [*ids, "g9"], [], 1, Links().score)


def test_large_choices_are_greedy_and_still_find_an_nvlink_clique() -> None:
    # 64 GPUs; 8 of them (every 8th) form an NVLink clique
    clique = list(range(3, 64, 8))
    links = Links(nvlinks={(a, b): 12 for a, b in itertools.combinations(clique, 2)})
    ids = [f"g{i}" for i in range(64)]
    assert preferred(gpus(64), ids, [], 8, links.score) == sorted(
        (f"g{i}" for i in clique), key=lambda s: int(s[1:])
    )
