"""What the real pynvml reports about a host, and what the topology says it should report.

Both sides produce the same plain structure, so a test compares them with one ==.
"""

from __future__ import annotations

from typing import Any

import pynvml
from gpu_cdi_fakehost import interconnect
from gpu_cdi_fakehost.catalog import MIB, NVLINK_VERSIONS, P2P_CAPS
from gpu_cdi_fakehost.topology import Gpu, Topology

PROFILE_COUNT = 0x12  # NVML_GPU_INSTANCE_PROFILE_COUNT in nvml.h


def _s(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


def observe() -> dict[str, Any]:
    """Walk every device through pynvml (nvmlInit must have been called)."""
    out: dict[str, Any] = {
        "driver": _s(pynvml.nvmlSystemGetDriverVersion()),
        "nvml": _s(pynvml.nvmlSystemGetNVMLVersion()),
        "cuda": pynvml.nvmlSystemGetCudaDriverVersion(),
        "cuda_v2": pynvml.nvmlSystemGetCudaDriverVersion_v2(),
        "gpus": [],
    }
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    out["gpus"] = [_observe_gpu(h) for h in handles]
    out["nvlinks"] = [_observe_nvlinks(h) for h in handles]
    out["pairs"] = {
        (i, j): (
            pynvml.nvmlDeviceGetTopologyCommonAncestor(a, b),
            # pynvml spells NVML_P2P_CAPS_INDEX_READ as a tuple, so the indexes are literal
            tuple(pynvml.nvmlDeviceGetP2PStatus(a, b, c) for c in range(len(P2P_CAPS))),
        )
        for i, a in enumerate(handles)
        for j, b in enumerate(handles)
        if i != j
    }
    return out


def _observe_nvlinks(h: Any) -> list[tuple[Any, ...]]:
    """(link, active, version, remote type, remote bus id) of each link the board has."""
    out: list[tuple[Any, ...]] = []
    for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
        try:
            active = pynvml.nvmlDeviceGetNvLinkState(h, link)
        except pynvml.NVMLError_NotSupported:
            continue
        version = pynvml.nvmlDeviceGetNvLinkVersion(h, link)
        if active:
            remote = pynvml.nvmlDeviceGetNvLinkRemotePciInfo(h, link)
            kind = pynvml.nvmlDeviceGetNvLinkRemoteDeviceType(h, link)
            out.append((link, 1, version, kind, _s(remote.busId), remote.pciDeviceId))
        else:
            out.append((link, 0, version, None, None, None))
    return out


def _observe_gpu(h: Any) -> dict[str, Any]:
    pci = pynvml.nvmlDeviceGetPciInfo(h)
    mem = pynvml.nvmlDeviceGetMemoryInfo(h)
    mem2 = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
    uuid = _s(pynvml.nvmlDeviceGetUUID(h))
    g: dict[str, Any] = {
        "name": _s(pynvml.nvmlDeviceGetName(h)),
        "uuid": uuid,
        "by_uuid": _s(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByUUID(uuid))),
        "by_pci": _s(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByPciBusId(_s(pci.busId)))),
        "minor": pynvml.nvmlDeviceGetMinorNumber(h),
        "bus_id": _s(pci.busId),
        "bus_id_legacy": _s(pci.busIdLegacy),
        "pci": (pci.domain, pci.bus, pci.device, pci.pciDeviceId, pci.pciSubSystemId),
        "arch": pynvml.nvmlDeviceGetArchitecture(h),
        "cc": pynvml.nvmlDeviceGetCudaComputeCapability(h),
        "memory_v1": (mem.total, mem.free, mem.used),
        "memory_v2": (mem2.total, mem2.reserved, mem2.free, mem2.used),
        "is_mig": bool(pynvml.nvmlDeviceIsMigDeviceHandle(h).value),
        "events": pynvml.nvmlDeviceGetSupportedEventTypes(h),
    }
    try:
        g["mig_mode"] = tuple(pynvml.nvmlDeviceGetMigMode(h))
    except pynvml.NVMLError_NotSupported:
        g["mig_mode"] = None
    g["max_mig"] = pynvml.nvmlDeviceGetMaxMigDeviceCount(h)
    g["profiles"] = []
    for p in range(PROFILE_COUNT):
        try:
            info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(h, p)
        except pynvml.NVMLError_NotSupported:
            continue
        g["profiles"].append(
            (p, _s(info.name), info.id, info.sliceCount, info.instanceCount,
             info.multiprocessorCount, info.copyEngineCount, info.decoderCount,
             info.encoderCount, info.jpegCount, info.ofaCount, info.memorySizeMB)
        )  # fmt: skip
    g["mig_devices"] = []
    g["gpu_instances"] = []
    if g["mig_mode"] and g["mig_mode"][0]:
        for j in range(g["max_mig"]):
            try:
                m = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
            except pynvml.NVMLError_NotFound:
                continue
            parent = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(m)
            mm = pynvml.nvmlDeviceGetMemoryInfo(m)
            muuid = _s(pynvml.nvmlDeviceGetUUID(m))
            g["mig_devices"].append(
                {
                    "index": j,
                    "uuid": muuid,
                    "by_uuid": _s(
                        pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByUUID(muuid))
                    ),
                    "name": _s(pynvml.nvmlDeviceGetName(m)),
                    "gi": pynvml.nvmlDeviceGetGpuInstanceId(m),
                    "ci": pynvml.nvmlDeviceGetComputeInstanceId(m),
                    "parent": _s(pynvml.nvmlDeviceGetUUID(parent)),
                    "is_mig": bool(pynvml.nvmlDeviceIsMigDeviceHandle(m).value),
                    "memory_total": mm.total,
                }
            )
        for gi_id in sorted({m["gi"] for m in g["mig_devices"]}):
            info = pynvml.nvmlGpuInstanceGetInfo(pynvml.nvmlDeviceGetGpuInstanceById(h, gi_id))
            g["gpu_instances"].append(
                (info.id, info.profileId, info.placement.start, info.placement.size)
            )
    return g


def expect(topo: Topology) -> dict[str, Any]:
    """What observe() must return for `topo`."""
    nvlinks = interconnect.nvlinks(topo)
    return {
        "driver": topo.driver_version,
        "nvml": topo.nvml_version,
        "cuda": topo.cuda_driver_version,
        "cuda_v2": topo.cuda_driver_version,
        "gpus": [_expect_gpu(g) for g in topo.gpus],
        "nvlinks": [_expect_nvlinks(g, links) for g, links in zip(topo.gpus, nvlinks, strict=True)],
        "pairs": {
            (a.index, b.index): (
                interconnect.common_ancestor(a, b),
                interconnect.p2p_status(topo, a.index, b.index),
            )
            for a in topo.gpus
            for b in topo.gpus
            if a != b
        },
    }


def _expect_nvlinks(g: Gpu, links: tuple[interconnect.Link, ...]) -> list[tuple[Any, ...]]:
    version = NVLINK_VERSIONS.get(g.architecture, 0)
    active = [
        (link.index, 1, version, link.remote_type, link.remote_pci.nvml, link.remote_pci_device_id)
        for link in links
    ]
    return active + [(i, 0, version, None, None, None) for i in range(len(links), g.nvlinks)]


def _expect_profiles(g: Gpu) -> list[tuple[Any, ...]]:
    return [
        (p.index, f"MIG {p.name}", p.id, p.slices, p.instances, p.multiprocessors,
         p.copy_engines, p.decoders, p.encoders, p.jpegs, p.ofas, p.memory_mib)
        for p in sorted(g.mig_profiles, key=lambda p: p.index)
    ]  # fmt: skip


def _expect_gpu(g: Gpu) -> dict[str, Any]:
    used_v1 = g.memory_reserved + g.memory_used
    mig_on = g.mig_mode
    return {
        "name": g.name,
        "uuid": g.uuid,
        "by_uuid": g.uuid,
        "by_pci": g.uuid,
        "minor": g.minor,
        "bus_id": g.pci.nvml,
        "bus_id_legacy": g.pci.nvml_legacy,
        "pci": (g.pci.domain, g.pci.bus, g.pci.device, g.pci_device_id, g.pci_subsystem_id),
        "arch": g.architecture_id,
        "cc": g.compute_capability,
        "memory_v1": (g.memory_total, g.memory_total - used_v1, used_v1),
        "memory_v2": (
            g.memory_total,
            g.memory_reserved,
            g.memory_total - used_v1,
            g.memory_used,
        ),
        "is_mig": False,
        # XID, P-state and clock events everywhere; ECC error events with ECC on
        "events": 0x1C | (0x3 if g.ecc else 0),
        "mig_mode": (int(g.mig_mode), int(g.mig_pending)) if g.mig_capable else None,
        "max_mig": g.max_mig_devices,
        # the V (v2 struct) query needs MIG mode enabled
        "profiles": _expect_profiles(g) if mig_on else [],
        "mig_devices": [
            {
                "index": m.index,
                "uuid": m.uuid,
                "by_uuid": m.uuid,
                "name": m.name,
                "gi": m.gpu_instance.id,
                "ci": m.compute_instance.id,
                "parent": g.uuid,
                "is_mig": True,
                "memory_total": m.gpu_instance.profile.memory_mib * MIB,
            }
            for m in g.mig_devices
        ],
        "gpu_instances": sorted(
            (gi.id, gi.profile.id, gi.start, gi.size) for gi in g.gpu_instances
        ),
    }
