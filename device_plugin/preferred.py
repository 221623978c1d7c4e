"""GetPreferredAllocation: which `size` of the available devices go best together. Pure.

The devices chosen maximise the sum of the pairwise link scores of their GPUs (NVLink first,
then the PCIe distance, then the NUMA node: see `topology.Links`). Two MIG devices on one GPU
are closest of all. Time-slicing replicas go to distinct GPUs where they can, the least used
first. Small choices are searched exhaustively; large ones grow greedily from each start.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Sequence

from device_plugin.resources import Device, Resource

SAME_GPU = 10_000  # MIG devices of one GPU share its memory system: nothing is closer
SHARED_GPU_PENALTY = -1_000_000  # two replicas of one GPU give a container one GPU
LOAD_WEIGHT = 1_000  # per free replica of the device's GPU: spread replicas over GPUs
EXHAUSTIVE_LIMIT = 5_000  # combinations searched exhaustively; beyond, greedy

PairScore = Callable[[int, int], int]  # link score of two GPUs by NVML index


class PreferenceError(ValueError):
    """The request cannot be satisfied from what it offers (kubelet should never ask)."""


def preferred(
    resource: Resource,
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
    link: PairScore,
) -> list[str]:
    """`size` IDs from `available`, all of `must_include` among them, closest together."""
    known = [resource.by_id[i] for i in dict.fromkeys(available) if i in resource.by_id]
    must = [resource.by_id[i] for i in dict.fromkeys(must_include) if i in resource.by_id]
    unknown = [i for i in (*available, *must_include) if i not in resource.by_id]
    if unknown:
        raise PreferenceError(f"{resource.name}: unknown device {unknown[0]!r}")
    if size < len(must) or size > len(set(known) | set(must)):
        raise PreferenceError(
            f"{resource.name}: cannot choose {size} devices from {len(known)} available "
            f"with {len(must)} required"
        )
    free = Counter(d.gpu_index for d in known)
    order = {d.id: i for i, d in enumerate(resource.devices)}
    candidates = sorted((d for d in known if d not in must), key=lambda d: order[d.id])

    def pair(a: Device, b: Device) -> int:
        if a.gpu_index != b.gpu_index:
            return link(a.gpu_index, b.gpu_index)
        return SHARED_GPU_PENALTY if resource.replicas > 1 else SAME_GPU

    def alone(d: Device) -> int:
        return LOAD_WEIGHT * free[d.gpu_index] if resource.replicas > 1 else 0

    def value(chosen: Sequence[Device]) -> int:
        return sum(alone(d) for d in chosen) + sum(
            pair(a, b) for a, b in itertools.combinations(chosen, 2)
        )

    # Devices of one GPU are interchangeable here: choose how many to take from each GPU.
    groups: dict[int, list[Device]] = {}
    for device in candidates:
        groups.setdefault(device.gpu_index, []).append(device)
    gpus = list(groups)

    def expand(counts: Sequence[int]) -> list[Device]:
        return [*must, *(d for g, n in zip(gpus, counts, strict=True) for d in groups[g][:n])]

    need = size - len(must)
    caps = [len(groups[g]) for g in gpus]
    if _count(caps, need) <= EXHAUSTIVE_LIMIT:
        # max() keeps the first best: the lowest device order wins ties
        best = max(_spreads(caps, need), key=lambda counts: value(expand(counts)))
    else:
        best = _greedy(groups, must, need, pair, alone, value)
    return sorted((d.id for d in expand(best)), key=order.__getitem__)


def _count(caps: Sequence[int], need: int) -> int:
    """How many ways there are to take `need` from bins of `caps` (stops counting early)."""
    ways = [1] + [0] * need
    for cap in caps:
        ways = [sum(ways[max(0, k - cap) : k + 1]) for k in range(need + 1)]
        if ways[need] > EXHAUSTIVE_LIMIT:
            break
    return ways[need]


def _spreads(caps: Sequence[int], need: int) -> list[tuple[int, ...]]:
    """Every way to take `need` from bins of `caps`, most from the first bins first."""
    if not caps:
        return [()] if need == 0 else []
    out = []
    for n in range(min(caps[0], need), -1, -1):
        out += [(n, *rest) for rest in _spreads(caps[1:], need - n)]
    return out


def _greedy(
    groups: dict[int, list[Device]],
    must: Sequence[Device],
    need: int,
    pair: Callable[[Device, Device], int],
    alone: Callable[[Device], int],
    value: Callable[[Sequence[Device]], int],
) -> tuple[int, ...]:
    """From the required devices, or else from each GPU in turn, add one device at a time
    where it joins best."""
    gpus = list(groups)
    starts = [None] if must else gpus
    best: tuple[int, ...] = ()
    best_value = -math.inf
    for start in starts:
        taken = dict.fromkeys(gpus, 0)
        chosen = list(must)
        if start is not None:
            taken[start] = 1
            chosen.append(groups[start][0])
        while len(chosen) < len(must) + need:
            nexts = {g: groups[g][taken[g]] for g in gpus if taken[g] < len(groups[g])}
            gains = {g: alone(d) + sum(pair(d, c) for c in chosen) for g, d in nexts.items()}
            pick = max(gains, key=gains.__getitem__)
            chosen.append(groups[pick][taken[pick]])
            taken[pick] += 1
        score = value(chosen)
        if score > best_value:
            best, best_value = tuple(taken.values()), score
    return best
