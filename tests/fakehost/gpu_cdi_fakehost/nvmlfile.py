"""Render a Topology as the line-based file the fake libnvidia-ml.so.1 reads at nvmlInit.

One record per line: a record type, then tab-separated key=value fields (see
specs/topology-format.md, "Fake NVML file"). The C side parses it with strtok, so values are
plain text without tabs or newlines (the topology loader guarantees that).
"""

from __future__ import annotations

from pathlib import Path

from gpu_cdi_fakehost import interconnect
from gpu_cdi_fakehost.catalog import NVLINK_VERSIONS
from gpu_cdi_fakehost.topology import Topology

FORMAT_VERSION = 1
# Where a fake host keeps it: <root>/.fakehost/nvml-topology.txt
MARKER = ".fakehost"
TOPOLOGY_FILE = "nvml-topology.txt"

# ErrorRule.mig is None for "the GPU and all its MIG devices"; the C side spells that -1.
_ANY = -1


def _line(kind: str, **fields: object) -> str:
    return "\t".join([kind, *(f"{k}={v}" for k, v in fields.items())])


def render(topology: Topology) -> str:
    """The file content for `topology`."""
    lines = [
        f"# fake NVML topology {topology.name} (generated from {topology.source})",
        _line("format", version=FORMAT_VERSION),
        _line(
            "system",
            driver=topology.driver_version,
            nvml=topology.nvml_version,
            cuda=topology.cuda_driver_version,
        ),
    ]
    for g in topology.gpus:
        lines.append(
            _line(
                "gpu",
                index=g.index,
                name=g.name,
                uuid=g.uuid,
                minor=g.minor,
                domain=g.pci.domain,
                bus=g.pci.bus,
                device=g.pci.device,
                pci_device_id=f"0x{g.pci_device_id:08X}",
                pci_subsystem_id=f"0x{g.pci_subsystem_id:08X}",
                arch=g.architecture_id,
                cc_major=g.compute_capability[0],
                cc_minor=g.compute_capability[1],
                mem_total=g.memory_total,
                mem_reserved=g.memory_reserved,
                mem_used=g.memory_used,
                mig_supported=int(g.mig_capable),
                ecc=int(g.ecc),
                mig_current=int(g.mig_mode),
                mig_pending=int(g.mig_pending),
                max_mig=g.max_mig_devices,
                nvlinks=g.nvlinks,
                nvlink_version=NVLINK_VERSIONS.get(g.architecture, 0),
            )
        )
        for p in g.mig_profiles:
            lines.append(
                _line(
                    "giprofile",
                    gpu=g.index,
                    profile=p.index,
                    id=p.id,
                    p2p=int(p.p2p),
                    slices=p.slices,
                    instances=p.instances,
                    sms=p.multiprocessors,
                    ce=p.copy_engines,
                    dec=p.decoders,
                    enc=p.encoders,
                    jpeg=p.jpegs,
                    ofa=p.ofas,
                    caps=0,
                    mem_mb=p.memory_mib,
                    name=f"MIG {p.name}",
                )
            )
        for gi in g.gpu_instances:
            lines.append(
                _line("gi", gpu=g.index, id=gi.id, profile_id=gi.profile.id, start=gi.start,
                      size=gi.size)
            )  # fmt: skip
        for m in g.mig_devices:
            lines.append(
                _line(
                    "mig",
                    gpu=g.index,
                    name=m.name,
                    uuid=m.uuid,
                    gi=m.gpu_instance.id,
                    ci=m.compute_instance.id,
                    ci_slices=m.compute_instance.slices,
                    ci_start=m.compute_instance_start,
                    mem_total=m.memory_total,
                    mem_reserved=0,
                    mem_used=0,
                )
            )
    for g, links in zip(topology.gpus, interconnect.nvlinks(topology), strict=True):
        for link in links:
            lines.append(
                _line(
                    "nvlink",
                    gpu=g.index,
                    link=link.index,
                    remote_type=link.remote_type,
                    domain=link.remote_pci.domain,
                    bus=link.remote_pci.bus,
                    device=link.remote_pci.device,
                    pci_device_id=f"0x{link.remote_pci_device_id:08X}",
                    pci_subsystem_id=f"0x{link.remote_pci_subsystem_id:08X}",
                )
            )
    # after every gpu record: the library sizes its GPU x GPU table at the first one
    for a in topology.gpus:
        for b in topology.gpus[a.index + 1 :]:
            read, write, nvlink, atomics, pci = interconnect.p2p_status(topology, a.index, b.index)
            lines.append(
                _line(
                    "pair",
                    gpu=a.index,
                    peer=b.index,
                    ancestor=interconnect.common_ancestor(a, b),
                    read=read,
                    write=write,
                    nvlink=nvlink,
                    atomics=atomics,
                    pci=pci,
                )
            )
    for e in topology.errors:
        lines.append(
            _line(
                "error",
                call=e.call,
                gpu=_ANY if e.gpu is None else e.gpu,
                mig=_ANY if e.mig is None else e.mig,
                code=e.code,
                times=e.times,
            )
        )
    return "\n".join(lines) + "\n"


def write(topology: Topology, path: Path) -> Path:
    """Write the file atomically (the library may be reading an older one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render(topology), encoding="utf-8")
    tmp.replace(path)
    return path


def read_devices(path: Path) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(GPU UUID, its MIG UUIDs in handle order) for each GPU of a file `render` wrote."""
    gpus: list[tuple[str, list[str]]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        kind, _, rest = line.partition("\t")
        fields = dict(f.split("=", 1) for f in rest.split("\t") if "=" in f)
        if kind == "gpu":
            gpus.append((fields["uuid"], []))
        elif kind == "mig":
            gpus[int(fields["gpu"])][1].append(fields["uuid"])
    return tuple((uuid, tuple(migs)) for uuid, migs in gpus)
