"""Inventory + settings -> the resources kubelet is told about: a pure function, no I/O.

| MIG strategy | full GPUs (MIG off) | MIG devices                                              |
|--------------|---------------------|----------------------------------------------------------|
| none         | nvidia.com/gpu      | not offered, nor their GPUs                              |
| single       | nvidia.com/gpu      | nvidia.com/gpu (every GPU MIG-enabled, one profile)      |
| mixed        | nvidia.com/gpu      | nvidia.com/mig-<profile>: mig-1g.5gb, mig-1c.3g.20gb     |

A MIG-enabled GPU is never offered whole. Device IDs are UUIDs (or NVML indices, `0`, `0:1`);
time-slicing replicas are `<id>::<n>`. Every device carries the name it has in the CDI spec
`gpu-cdi generate` writes for the same host (UUID names for UUID IDs, index names for index
IDs: generate writes both by default).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

import attrs

from cdi.nvidia import naming
from cdi.nvidia.inventory import Gpu, Inventory, MigDevice
from device_plugin.config import Settings, TimeSlicing

VENDOR = "nvidia.com"
GPU_RESOURCE = f"{VENDOR}/gpu"
REPLICA_SEPARATOR = "::"
ID_MAX = 63  # kubelet's Device.ID limit (api.proto)


class ResourceError(ValueError):
    """The node cannot be offered under these settings (e.g. `single` on mixed profiles)."""


@attrs.frozen
class Device:
    """One device kubelet can allocate: a GPU, a MIG device, or a replica of either."""

    id: str  # what kubelet sees
    name: str  # its device name in the CDI spec; also its NVIDIA_VISIBLE_DEVICES item
    uuid: str  # GPU-... or MIG-...: what health is tracked by
    gpu_uuid: str  # the physical GPU (== uuid for a full GPU)
    gpu_index: int  # NVML index of the physical GPU
    numa: int | None = None
    mig: tuple[int, int] | None = None  # (GPU instance, compute instance)
    replica: int | None = None


@attrs.frozen
class Resource:
    """One extended resource and its devices, in NVML order."""

    name: str
    devices: tuple[Device, ...]
    replicas: int = 1
    fail_requests_greater_than_one: bool = False
    by_id: Mapping[str, Device] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "by_id", {d.id: d for d in self.devices})

    @property
    def socket_name(self) -> str:
        """The file name of this resource's plugin socket, beside kubelet.sock."""
        return f"gpu-cdi-{self.name.partition('/')[2]}.sock"


_DOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")


def resource_name_error(name: str) -> str | None:
    """Why kubelet would refuse `name` as an extended resource name, or None."""
    domain, slash, rest = name.partition("/")
    if not slash or not _DOMAIN.match(domain) or len(domain) > 253:
        return "expected <domain>/<name>, the domain a lower-case DNS name"
    if domain == "kubernetes.io" or domain.endswith(".kubernetes.io"):
        return "the kubernetes.io domain is kubelet's own"
    if name.startswith("requests."):
        return "the requests. prefix is kubelet's own"
    if not _NAME.match(rest) or len(rest) > 63:
        return "the name must be 1-63 letters, digits, '-', '_' or '.', alphanumeric at both ends"
    return None


def mig_profile(mig: MigDevice) -> str:
    """The profile of a MIG device from its NVML name: `1g.5gb`, `1c.3g.20gb`, `1g.5gb+me`."""
    name = mig.profile.strip()
    head, sep, tail = name.rpartition("MIG ")
    if sep and (not head or head.endswith(" ")):
        return tail.strip()
    return name


def mig_resource(profile: str) -> str:
    """The resource name of a MIG profile, as NVIDIA names it (`+` becomes `.`)."""
    return f"{VENDOR}/mig-{profile.replace('+', '.')}"


# The device-id strategies are generate's naming strategies of the same name, so an ID (before
# any replica suffix) is the device's name in the spec.


def _gpu_device(gpu: Gpu, strategy: str, numa: int | None) -> Device:
    name = naming.gpu_name(strategy, gpu)
    return Device(name, name, gpu.uuid, gpu.uuid, gpu.nvml_index, numa)


def _mig_device(gpu: Gpu, mig: MigDevice, strategy: str, numa: int | None) -> Device:
    name = naming.mig_name(strategy, gpu, mig)
    return Device(name, name, mig.uuid, gpu.uuid, gpu.nvml_index, numa, (mig.gi, mig.ci))


def _describe(gpu: Gpu, mig: MigDevice | None = None) -> str:
    if mig is None:
        return f"GPU {gpu.nvml_index} ({gpu.uuid or gpu.pci})"
    return f"MIG device {gpu.nvml_index}:{mig.mig_index} ({mig.uuid})"


def _single_check(gpus: Sequence[Gpu]) -> None:
    """NVIDIA's rules for `single`: all GPUs MIG-enabled or none, and one profile."""
    enabled = [g for g in gpus if g.mig_enabled]
    if enabled and len(enabled) != len(gpus):
        on = ", ".join(str(g.nvml_index) for g in enabled)
        off = ", ".join(str(g.nvml_index) for g in gpus if not g.mig_enabled)
        raise ResourceError(
            f"--mig-strategy single needs every GPU MIG-enabled or none: GPUs {on} are, "
            f"GPUs {off} are not; use --mig-strategy mixed"
        )
    profiles: dict[str, str] = {}
    for gpu in enabled:
        for mig in gpu.migs:
            profiles.setdefault(mig_profile(mig), f"{gpu.nvml_index}:{mig.mig_index}")
    if len(profiles) > 1:
        found = ", ".join(f"{p} (first {where})" for p, where in profiles.items())
        raise ResourceError(
            f"--mig-strategy single needs one MIG profile on the node, found {found}; "
            "use --mig-strategy mixed or reconfigure MIG"
        )


def _shared(resource: Resource, sharing: TimeSlicing, notes: list[str]) -> Resource:
    entry = sharing.for_resource(resource.name)
    if entry is None:
        return resource
    name = entry.rename or (f"{resource.name}.shared" if sharing.rename_by_default else "")
    name = name if not name or "/" in name else f"{VENDOR}/{name}"
    error = resource_name_error(name) if name else None
    if error:
        raise ResourceError(f"sharing.timeSlicing: resource name {name!r}: {error}")
    devices = tuple(
        attrs.evolve(device, id=f"{device.id}{REPLICA_SEPARATOR}{n}", replica=n)
        for device in resource.devices
        for n in range(entry.replicas)
    )
    too_long = [d.id for d in devices if len(d.id) > ID_MAX]
    if too_long:
        raise ResourceError(
            f"sharing.timeSlicing: {resource.name} with {entry.replicas} replicas: device ID "
            f"{too_long[0]!r} is longer than kubelet's {ID_MAX}"
        )
    notes.append(
        f"{resource.name}: each of {len(resource.devices)} devices shared "
        f"{entry.replicas} times" + (f" as {name}" if name else "")
    )
    return Resource(
        name or resource.name, devices, entry.replicas, sharing.fail_requests_greater_than_one
    )


def build(
    inv: Inventory,
    settings: Settings,
    spec_names: Collection[str] | None = None,
    numa: Mapping[str, int] | None = None,
) -> tuple[tuple[Resource, ...], tuple[str, ...]]:
    """(resources, notes) for `inv`: one note per device left out and why.

    `spec_names` are the device names of the CDI spec for this host: a device without one
    could not reach a container and is left out (None: no check). `numa` maps PCI addresses to
    NUMA nodes. ResourceError when the settings cannot describe the node.
    """
    strategy, id_strategy = settings.mig_strategy, settings.device_id_strategy
    numa = numa or {}
    gpus = [g for g in inv.gpus if g.uuid or not g.error]
    notes = [
        f"{_describe(g)} left out: {g.error} and its UUID is unknown"
        for g in inv.gpus
        if g.error and not g.uuid
    ]
    if strategy == "single":
        _single_check(gpus)
    by_name: dict[str, list[Device]] = {}

    def offer(resource: str, gpu: Gpu, device: Device, mig: MigDevice | None) -> None:
        if spec_names is not None and device.name not in spec_names and not gpu.error:
            notes.append(f"{_describe(gpu, mig)} left out: not in the CDI spec for this host")
            return
        by_name.setdefault(resource, []).append(device)

    for gpu in gpus:
        node = numa.get(gpu.pci)
        if not gpu.mig_enabled:
            offer(GPU_RESOURCE, gpu, _gpu_device(gpu, id_strategy, node), None)
            continue
        if strategy == "none":
            notes.append(f"{_describe(gpu)} left out: MIG is enabled (--mig-strategy none)")
            continue
        if not gpu.migs:
            notes.append(f"{_describe(gpu)} left out: MIG is enabled but has no MIG devices")
        for mig in gpu.migs:
            profile = mig_profile(mig)
            if not profile:
                notes.append(f"{_describe(gpu, mig)} left out: NVML gave no profile name")
                continue
            resource = GPU_RESOURCE if strategy == "single" else mig_resource(profile)
            offer(resource, gpu, _mig_device(gpu, mig, id_strategy, node), mig)
    resources = [
        _shared(Resource(name, tuple(devices)), settings.time_slicing, notes)
        for name, devices in sorted(by_name.items())
    ]
    for entry in settings.time_slicing.resources:
        if entry.name not in by_name:
            notes.append(f"sharing.timeSlicing: this node has no {entry.name}: nothing shared")
    names = [r.name for r in resources]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise ResourceError(f"two resources would be named {clash}: rename the shared one")
    return tuple(resources), tuple(notes)


def parent_ids(device_ids: Sequence[str]) -> list[str]:
    """Device IDs with the replica suffix removed, each once, in order."""
    out: list[str] = []
    for device_id in device_ids:
        base = device_id.partition(REPLICA_SEPARATOR)[0]
        if base not in out:
            out.append(base)
    return out
