"""Allocate: device IDs kubelet chose -> what the container gets, per --device-list-strategy.

| strategy        | ContainerAllocateResponse                                               |
|-----------------|-------------------------------------------------------------------------|
| envvar          | envs NVIDIA_VISIBLE_DEVICES=<names> (gpu-cdi-nri turns them into CDI)    |
| cdi-annotations | annotations `cdi.k8s.io/gpu-cdi_<resource>`: `nvidia.com/gpu=<name>,...` |
| cdi-cri         | cdi_devices [`nvidia.com/gpu=<name>`, ...] (kubelet >= 1.29 passes them) |

Names are the devices' names in the spec `gpu-cdi generate` writes for this host. With
--pass-device-specs the device nodes of that spec come along too, for runtimes without CDI.
Pure functions: the health verdict comes in as a callable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import attrs

from cdi.errors import AnnotationError
from cdi.names import ANNOTATION_PREFIX, annotation_key, qualified_name
from device_plugin.api import pb
from device_plugin.resources import Device, Resource

VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
ANNOTATION_PLUGIN = "gpu-cdi"
NODE_PERMISSIONS = "rw"  # what NVIDIA's plugin passes; kubelet adds the cgroup rule

Nodes = tuple[tuple[str, str], ...]  # (container path, host path)


class AllocateError(ValueError):
    """The request cannot be granted; the message names the device and why."""


@attrs.frozen
class Handout:
    """How devices are handed out (from the settings), fixed for the process."""

    strategies: tuple[str, ...]
    kind: str = "nvidia.com/gpu"
    annotation_prefix: str = ANNOTATION_PREFIX
    # spec device name -> its nodes, plus "" -> the spec-wide nodes; None: --pass-device-specs off
    nodes: Mapping[str, Nodes] | None = None


def annotation_key_for(resource: str, prefix: str = ANNOTATION_PREFIX) -> str:
    """The container annotation the cdi-annotations strategy uses for `resource`: one key per
    resource, so a container given GPUs and MIG devices by two plugins gets both."""
    try:
        key = annotation_key(ANNOTATION_PLUGIN, resource)
    except AnnotationError:  # a resource name too long for the 63-character key
        import hashlib

        digest = hashlib.sha256(resource.encode()).hexdigest()[:16]
        key = annotation_key(ANNOTATION_PLUGIN, digest)
    return prefix + key[len(ANNOTATION_PREFIX) :]


def granted(
    resource: Resource, device_ids: Sequence[str], why_unhealthy: Callable[[Device], str | None]
) -> list[Device]:
    """The devices behind `device_ids`; AllocateError for an unknown or unhealthy one."""
    devices: list[Device] = []
    for device_id in device_ids:
        device = resource.by_id.get(device_id)
        if device is None:
            sample = ", ".join(d.id for d in resource.devices[:2])
            more = ", ..." if len(resource.devices) > 2 else ""
            raise AllocateError(
                f"{resource.name}: device {device_id!r} was never advertised by this plugin "
                f"(it has {len(resource.devices)}: {sample}{more})"
            )
        why = why_unhealthy(device)
        if why:
            raise AllocateError(f"{resource.name}: device {device_id} is unhealthy: {why}")
        devices.append(device)
    if resource.fail_requests_greater_than_one and resource.replicas > 1 and len(devices) > 1:
        raise AllocateError(
            f"{resource.name}: {len(devices)} shared devices asked for one container; "
            "sharing.timeSlicing.failRequestsGreaterThanOne allows one"
        )
    return devices


def container_response(
    resource: Resource, devices: Sequence[Device], handout: Handout
) -> pb.ContainerAllocateResponse:
    """The response for one container given `devices` (replicas of one GPU count once)."""
    names: list[str] = []
    for device in devices:
        if device.name not in names:
            names.append(device.name)
    vendor, _, cls = handout.kind.partition("/")
    qualified = [qualified_name(vendor, cls, name) for name in names]
    response = pb.ContainerAllocateResponse()
    if "envvar" in handout.strategies:
        response.envs[VISIBLE_DEVICES] = ",".join(names)
    if "cdi-annotations" in handout.strategies:
        key = annotation_key_for(resource.name, handout.annotation_prefix)
        response.annotations[key] = ",".join(qualified)
    if "cdi-cri" in handout.strategies:
        response.cdi_devices.extend(pb.CDIDevice(name=name) for name in qualified)
    if handout.nodes is not None:
        seen: set[str] = set()
        for name in ("", *names):
            for container_path, host_path in handout.nodes.get(name, ()):
                if container_path not in seen:
                    seen.add(container_path)
                    response.devices.append(
                        pb.DeviceSpec(
                            container_path=container_path,
                            host_path=host_path,
                            permissions=NODE_PERMISSIONS,
                        )
                    )
    return response
