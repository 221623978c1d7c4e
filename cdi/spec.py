"""The CDI spec model: frozen attrs classes that mirror the spec's JSON fields.

Field names are snake_case here; `cdi.codec` maps them to the exact CDI keys
(`hostPath`, `containerEdits`, `additionalGids`, ...). Optional scalars are None when the
spec leaves them out, so that "absent" and "zero" stay distinguishable where the reference
library distinguishes them (major 0 means "fill from the host").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs


def _tuple(value: Iterable[object] | None) -> tuple[object, ...]:
    return tuple(value) if value is not None else ()


@attrs.frozen
class DeviceNode:
    """A device node to create in the container (`deviceNodes[]`)."""

    path: str
    host_path: str | None = None
    type: str | None = None
    major: int | None = None
    minor: int | None = None
    file_mode: int | None = None
    permissions: str | None = None
    uid: int | None = None
    gid: int | None = None


@attrs.frozen
class Mount:
    """A mount to add to the container (`mounts[]`)."""

    host_path: str
    container_path: str
    options: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    type: str | None = None


@attrs.frozen
class Hook:
    """An OCI hook (`hooks[]`); `hook_name` is the OCI stage."""

    hook_name: str
    path: str
    args: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    env: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    timeout: int | None = None


@attrs.frozen
class IntelRdt:
    """Intel RDT settings (`intelRdt`), cdiVersion 0.7.0."""

    clos_id: str | None = None
    l3_cache_schema: str | None = None
    mem_bw_schema: str | None = None
    enable_cmt: bool | None = None
    enable_mbm: bool | None = None


@attrs.frozen
class ContainerEdits:
    """Edits a device (or the whole spec) makes to a container."""

    env: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    device_nodes: tuple[DeviceNode, ...] = attrs.field(default=(), converter=_tuple)
    hooks: tuple[Hook, ...] = attrs.field(default=(), converter=_tuple)
    mounts: tuple[Mount, ...] = attrs.field(default=(), converter=_tuple)
    intel_rdt: IntelRdt | None = None
    additional_gids: tuple[int, ...] = attrs.field(default=(), converter=_tuple)

    def is_empty(self) -> bool:
        """True when the edits change nothing (the reference's `isEmpty`)."""
        return not (
            self.env
            or self.device_nodes
            or self.hooks
            or self.mounts
            or self.intel_rdt is not None
            or self.additional_gids
        )


def _frozen_map(value: Mapping[str, str] | None) -> Mapping[str, str]:
    # A plain dict inside a frozen class is still mutable; a sorted tuple-backed copy is not
    # needed for correctness here, but a fresh dict keeps callers from aliasing input.
    return dict(value) if value else {}


@attrs.frozen
class Device:
    """One named device of a spec."""

    name: str
    container_edits: ContainerEdits = attrs.field(factory=ContainerEdits)
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_map)


@attrs.frozen
class Spec:
    """A whole CDI spec file."""

    version: str
    kind: str
    devices: tuple[Device, ...] = attrs.field(default=(), converter=_tuple)
    container_edits: ContainerEdits = attrs.field(factory=ContainerEdits)
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_map)

    @property
    def vendor(self) -> str:
        """The vendor part of `kind` (before the first `/`)."""
        vendor, sep, _ = self.kind.partition("/")
        return vendor if sep else ""

    @property
    def cls(self) -> str:
        """The class part of `kind` (after the first `/`)."""
        vendor, sep, cls = self.kind.partition("/")
        return cls if sep else vendor
