"""The CDI spec model: frozen attrs classes, one per object of a spec, each field declared once.

A field's metadata (`cdi(...)`) holds what the reference library keeps in its struct tags and
version table (specs-go/config.go, specs-go/version.go): the exact key, how the value is
written (`Wire`), whether it is written when empty, and the first cdiVersion that allows it.
Fields are declared in the reference's struct order, which is the order specs are written in.
The loader's field tables (`cdi.codec`), the writer's keys (`cdi.dump`) and the minimum-version
rules (`cdi.version`) are all derived from these declarations: a new CDI field is one line here.

Optional scalars are None when the spec leaves them out, so that "absent" and "zero" stay
distinguishable where the reference distinguishes them (major 0 means "fill from the host").
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import attrs


class Wire(enum.Enum):
    """How a field's value is written: the Go type of the reference's field."""

    STRING = "a string"
    INT64 = "a 64-bit integer"
    UINT32 = "an unsigned 32-bit integer"
    BOOL = "a boolean"
    STRING_MAP = "a mapping of strings"
    OBJECT = "a mapping"


class Field(NamedTuple):
    """What the model declares about one CDI field (attrs metadata under the key "cdi")."""

    key: str  # the exact key in YAML/JSON
    wire: Wire  # the value's type; with `many`, of each item of a list
    many: bool  # a list of values
    of: type | None  # the model class of an OBJECT
    since: str | None  # the first cdiVersion that allows it being set; None: every version
    always: bool  # written even when empty (no `omitempty` in the reference)


def cdi(
    key: str,
    wire: Wire | type = Wire.STRING,
    since: str | None = None,
    *,
    many: bool = False,
    always: bool = False,
) -> dict[str, Field]:
    """The metadata of a CDI field; `wire` is a model class for nested objects."""
    if isinstance(wire, Wire):
        return {"cdi": Field(key, wire, many, None, since, always)}
    return {"cdi": Field(key, Wire.OBJECT, many, wire, since, always)}


def _tuple(value: Iterable[Any] | None) -> tuple[Any, ...]:
    return tuple(value) if value is not None else ()


def _frozen_map(value: Mapping[str, str] | None) -> Mapping[str, str]:
    # A fresh dict keeps callers from aliasing their input.
    return dict(value) if value else {}


class _Model:
    """The base of the model classes: one __repr__ for all of them, where attrs would compile
    one per class (start-up time: every `gpu-cdi` run defines these classes)."""

    __slots__ = ()

    def __repr__(self) -> str:
        cls: Any = type(self)
        fields = (f"{a.name}={getattr(self, a.name)!r}" for a in attrs.fields(cls))
        return f"{cls.__name__}({', '.join(fields)})"


@attrs.frozen(repr=False)
class DeviceNode(_Model):
    """A device node to create in the container (`deviceNodes[]`)."""

    path: str = attrs.field(metadata=cdi("path", always=True))
    host_path: str | None = attrs.field(default=None, metadata=cdi("hostPath", since="0.5.0"))
    type: str | None = attrs.field(default=None, metadata=cdi("type"))
    major: int | None = attrs.field(default=None, metadata=cdi("major", Wire.INT64))
    minor: int | None = attrs.field(default=None, metadata=cdi("minor", Wire.INT64))
    file_mode: int | None = attrs.field(default=None, metadata=cdi("fileMode", Wire.UINT32))
    permissions: str | None = attrs.field(default=None, metadata=cdi("permissions"))
    uid: int | None = attrs.field(default=None, metadata=cdi("uid", Wire.UINT32))
    gid: int | None = attrs.field(default=None, metadata=cdi("gid", Wire.UINT32))


@attrs.frozen(repr=False)
class Mount(_Model):
    """A mount to add to the container (`mounts[]`)."""

    host_path: str = attrs.field(metadata=cdi("hostPath", always=True))
    container_path: str = attrs.field(metadata=cdi("containerPath", always=True))
    options: tuple[str, ...] = attrs.field(
        default=(), converter=_tuple, metadata=cdi("options", many=True)
    )
    type: str | None = attrs.field(default=None, metadata=cdi("type", since="0.4.0"))


# The OCI hook stages a CDI hook may name, in the OCI runtime spec's order.
HOOK_STAGES = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)


@attrs.frozen(repr=False)
class Hook(_Model):
    """An OCI hook (`hooks[]`); `hook_name` is the OCI stage (one of HOOK_STAGES)."""

    hook_name: str = attrs.field(metadata=cdi("hookName", always=True))
    path: str = attrs.field(metadata=cdi("path", always=True))
    args: tuple[str, ...] = attrs.field(
        default=(), converter=_tuple, metadata=cdi("args", many=True)
    )
    env: tuple[str, ...] = attrs.field(default=(), converter=_tuple, metadata=cdi("env", many=True))
    timeout: int | None = attrs.field(default=None, metadata=cdi("timeout", Wire.INT64))


@attrs.frozen(repr=False)
class IntelRdt(_Model):
    """Intel RDT settings (`intelRdt`)."""

    clos_id: str | None = attrs.field(default=None, metadata=cdi("closID"))
    l3_cache_schema: str | None = attrs.field(default=None, metadata=cdi("l3CacheSchema"))
    mem_bw_schema: str | None = attrs.field(default=None, metadata=cdi("memBwSchema"))
    enable_cmt: bool | None = attrs.field(default=None, metadata=cdi("enableCMT", Wire.BOOL))
    enable_mbm: bool | None = attrs.field(default=None, metadata=cdi("enableMBM", Wire.BOOL))


@attrs.frozen(repr=False)
class ContainerEdits(_Model):
    """Edits a device (or the whole spec) makes to a container."""

    env: tuple[str, ...] = attrs.field(default=(), converter=_tuple, metadata=cdi("env", many=True))
    device_nodes: tuple[DeviceNode, ...] = attrs.field(
        default=(), converter=_tuple, metadata=cdi("deviceNodes", DeviceNode, many=True)
    )
    hooks: tuple[Hook, ...] = attrs.field(
        default=(), converter=_tuple, metadata=cdi("hooks", Hook, many=True)
    )
    mounts: tuple[Mount, ...] = attrs.field(
        default=(), converter=_tuple, metadata=cdi("mounts", Mount, many=True)
    )
    intel_rdt: IntelRdt | None = attrs.field(
        default=None, metadata=cdi("intelRdt", IntelRdt, "0.7.0")
    )
    additional_gids: tuple[int, ...] = attrs.field(
        default=(),
        converter=_tuple,
        metadata=cdi("additionalGids", Wire.UINT32, "0.7.0", many=True),
    )

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


@attrs.frozen(repr=False)
class Device(_Model):
    """One named device of a spec."""

    name: str = attrs.field(metadata=cdi("name", always=True))
    annotations: Mapping[str, str] = attrs.field(
        factory=dict,
        converter=_frozen_map,
        kw_only=True,
        metadata=cdi("annotations", Wire.STRING_MAP, "0.6.0"),
    )
    container_edits: ContainerEdits = attrs.field(
        factory=ContainerEdits, metadata=cdi("containerEdits", ContainerEdits, always=True)
    )


@attrs.frozen(repr=False)
class Spec(_Model):
    """A whole CDI spec file."""

    version: str = attrs.field(metadata=cdi("cdiVersion", always=True))
    kind: str = attrs.field(metadata=cdi("kind", always=True))
    annotations: Mapping[str, str] = attrs.field(
        factory=dict,
        converter=_frozen_map,
        kw_only=True,
        metadata=cdi("annotations", Wire.STRING_MAP, "0.6.0"),
    )
    devices: tuple[Device, ...] = attrs.field(
        default=(), converter=_tuple, metadata=cdi("devices", Device, many=True, always=True)
    )
    container_edits: ContainerEdits = attrs.field(
        factory=ContainerEdits, metadata=cdi("containerEdits", ContainerEdits)
    )

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


class Declared(NamedTuple):
    """A field of a model class as the loader, writer and version rules see it."""

    attr: str  # the attrs attribute
    field: Field
    default: object  # the value when left out (a factory is called once)
    required: bool  # no default: the constructor needs it


def declared(cls: type) -> tuple[Declared, ...]:
    """The CDI fields of model class `cls`, in declaration (= writing) order."""
    result = []
    for attribute in attrs.fields(cls):
        default = attribute.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        required = default is attrs.NOTHING
        field = attribute.metadata["cdi"]
        result.append(Declared(attribute.name, field, None if required else default, required))
    return tuple(result)


# Spec files: the extensions CDI registries read, and the format each one holds.
SPEC_FORMATS = {".yaml": "yaml", ".json": "json"}
