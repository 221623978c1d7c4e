"""The CDI schema as field tables, and strict conversion of decoded YAML/JSON data to the model.

Exact key match first, then a case-insensitive one (the reference decodes with Go's
encoding/json, which folds case); two keys for one field, unknown keys, wrong types and
out-of-range numbers are errors that name the field path and the value. An explicit null
means "not set" (Go leaves the zero value).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cdi.errors import SpecError
from cdi.names import quote
from cdi.spec import ContainerEdits, Device, DeviceNode, Hook, IntelRdt, Mount, Spec
from cdi.yamlload import Yaml11Scalar

_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT32 = (0, (1 << 32) - 1)


class _Bad(Exception):
    """A decode error below the spec level; `path` grows as it propagates up."""

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path


def describe(value: object) -> str:
    """A decoded value as an error message shows it."""
    if type(value) is str:
        return f"string {quote(value)}"
    if type(value) is bool:
        return f"boolean {'true' if value else 'false'}"
    if type(value) is int:
        return f"integer {value}"
    if type(value) is float:
        return f"number {value!r}"
    if isinstance(value, Yaml11Scalar):
        return f"YAML {value.kind} {value.text}"
    if value is None:
        return "null"
    if type(value) is dict:
        return "a mapping"
    if type(value) is list:
        return "a list"
    return type(value).__name__


def _not_string(value: object) -> _Bad:
    hint = ""
    if isinstance(value, Yaml11Scalar):
        hint = f" (quote it: {quote(value.text)})"
    elif type(value) is int:
        hint = f' (quote it: "{value}")'
    return _Bad(f"expected a string, got {describe(value)}{hint}")


def _string_list(value: object) -> tuple[str, ...]:
    if type(value) is not list:
        raise _Bad(f"expected a list of strings, got {describe(value)}")
    for index, item in enumerate(value):
        if type(item) is not str:
            bad = _not_string(item)
            bad.path = f"[{index}]"
            raise bad
    return tuple(value)


def _integer(value: object, low: int, high: int, what: str) -> int:
    if type(value) is not int:
        raise _Bad(f"expected {what}, got {describe(value)}")
    if not low <= value <= high:
        raise _Bad(f"{value} is out of range for {what} ({low} to {high})")
    return value


def _int64(value: object) -> int:
    if type(value) is int and _INT64[0] <= value <= _INT64[1]:
        return value
    return _integer(value, *_INT64, "a 64-bit integer")


def _uint32(value: object) -> int:
    if type(value) is int and 0 <= value <= 0xFFFFFFFF:
        return value
    return _integer(value, *_UINT32, "an unsigned 32-bit integer")


def _uint32_list(value: object) -> tuple[int, ...]:
    if type(value) is not list:
        raise _Bad(f"expected a list of unsigned 32-bit integers, got {describe(value)}")
    for index, item in enumerate(value):
        if not (type(item) is int and 0 <= item <= 0xFFFFFFFF) and item is not None:
            try:
                _uint32(item)
            except _Bad as bad:
                bad.path = f"[{index}]"
                raise
    # A null item is Go's zero value, 0, as in the reference (and 0 is ignored at injection).
    return tuple(0 if item is None else item for item in value)


def _boolean(value: object) -> bool:
    if type(value) is bool:
        return value
    if isinstance(value, Yaml11Scalar) and value.kind == "boolean":
        return bool(value.value)
    raise _Bad(f"expected a boolean, got {describe(value)}")


def _string_map(value: object) -> dict[str, str]:
    if type(value) is not dict:
        raise _Bad(f"expected a mapping of strings, got {describe(value)}")
    for key, item in value.items():
        if type(item) is not str:
            bad = _not_string(item)
            bad.path = f"[{quote(key)}]"
            raise bad
    return value


# A field table maps the exact CDI key to (attribute, converter); converter None = string.
_Table = dict[str, tuple[str, Callable[[Any], Any] | None]]


def _fold(table: _Table) -> dict[str, str]:
    return {key.lower(): key for key in table}


def _fields(value: object, table: _Table, folded: Mapping[str, str], what: str) -> dict[str, Any]:
    """Keyword arguments for a model class from one decoded mapping."""
    if type(value) is not dict:
        raise _Bad(f"expected a mapping ({what}), got {describe(value)}")
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        entry = table.get(key)
        if entry is None:
            exact = folded.get(key.lower())
            if exact is None:
                raise _Bad(
                    f"unknown field {quote(key)} in {what} (known: {', '.join(table)})",
                )
            entry = table[exact]
        attr, convert = entry
        if attr in kwargs:
            raise _Bad(f"field {quote(key)} given twice (keys match case-insensitively)")
        if item is None:
            kwargs[attr] = None
            continue
        if convert is None:
            if type(item) is not str:
                bad = _not_string(item)
                bad.path = "." + key
                raise bad
            kwargs[attr] = item
        else:
            try:
                kwargs[attr] = convert(item)
            except _Bad as bad:
                bad.path = f".{key}{bad.path}"
                raise
    return kwargs


def _drop_nulls(kwargs: dict[str, Any]) -> dict[str, Any]:
    # An explicit null means "not set", as Go's decoder leaves the zero value in place.
    if None in kwargs.values():
        return {key: item for key, item in kwargs.items() if item is not None}
    return kwargs


NODE_FIELDS: _Table = {
    "path": ("path", None),
    "hostPath": ("host_path", None),
    "type": ("type", None),
    "major": ("major", _int64),
    "minor": ("minor", _int64),
    "fileMode": ("file_mode", _uint32),
    "permissions": ("permissions", None),
    "uid": ("uid", _uint32),
    "gid": ("gid", _uint32),
}
_NODE_FOLDED = _fold(NODE_FIELDS)


def _nodes(value: object) -> tuple[DeviceNode, ...]:
    return _objects(value, _node, "device nodes")


def _node(value: object) -> DeviceNode:
    return build_node(_drop_nulls(_fields(value, NODE_FIELDS, _NODE_FOLDED, "a device node")))


def build_node(kwargs: dict[str, Any]) -> DeviceNode:
    """A DeviceNode from converted fields (a missing path is "", as Go leaves it)."""
    return DeviceNode(kwargs.pop("path", ""), **kwargs)


MOUNT_FIELDS: _Table = {
    "hostPath": ("host_path", None),
    "containerPath": ("container_path", None),
    "options": ("options", _string_list),
    "type": ("type", None),
}
_MOUNT_FOLDED = _fold(MOUNT_FIELDS)


def _mount(value: object) -> Mount:
    return build_mount(_drop_nulls(_fields(value, MOUNT_FIELDS, _MOUNT_FOLDED, "a mount")))


def build_mount(kwargs: dict[str, Any]) -> Mount:
    """A Mount from converted fields."""
    return Mount(kwargs.pop("host_path", ""), kwargs.pop("container_path", ""), **kwargs)


HOOK_FIELDS: _Table = {
    "hookName": ("hook_name", None),
    "path": ("path", None),
    "args": ("args", _string_list),
    "env": ("env", _string_list),
    "timeout": ("timeout", _int64),
}
_HOOK_FOLDED = _fold(HOOK_FIELDS)


def _hook(value: object) -> Hook:
    return build_hook(_drop_nulls(_fields(value, HOOK_FIELDS, _HOOK_FOLDED, "a hook")))


def build_hook(kwargs: dict[str, Any]) -> Hook:
    """A Hook from converted fields."""
    return Hook(kwargs.pop("hook_name", ""), kwargs.pop("path", ""), **kwargs)


RDT_FIELDS: _Table = {
    "closID": ("clos_id", None),
    "l3CacheSchema": ("l3_cache_schema", None),
    "memBwSchema": ("mem_bw_schema", None),
    "enableCMT": ("enable_cmt", _boolean),
    "enableMBM": ("enable_mbm", _boolean),
}
_RDT_FOLDED = _fold(RDT_FIELDS)


def _intel_rdt(value: object) -> IntelRdt:
    return IntelRdt(**_drop_nulls(_fields(value, RDT_FIELDS, _RDT_FOLDED, "intelRdt")))


def _objects(value: object, convert: Callable[[object], Any], what: str) -> tuple[Any, ...]:
    if type(value) is not list:
        raise _Bad(f"expected a list of {what}, got {describe(value)}")
    index = 0
    try:
        result = tuple([convert(item) for item in value])
    except _Bad as bad:
        # Find the failing index only on the error path; the happy path stays one comprehension.
        for index, item in enumerate(value):  # noqa: B007
            try:
                convert(item)
            except _Bad:
                break
        bad.path = f"[{index}]{bad.path}"
        raise
    return result


EDITS_FIELDS: _Table = {
    "env": ("env", _string_list),
    "deviceNodes": ("device_nodes", _nodes),
    "hooks": ("hooks", lambda value: _objects(value, _hook, "hooks")),
    "mounts": ("mounts", lambda value: _objects(value, _mount, "mounts")),
    "intelRdt": ("intel_rdt", _intel_rdt),
    "additionalGids": ("additional_gids", _uint32_list),
}
_EDITS_FOLDED = _fold(EDITS_FIELDS)


def _edits(value: object) -> ContainerEdits:
    return ContainerEdits(
        **_drop_nulls(_fields(value, EDITS_FIELDS, _EDITS_FOLDED, "containerEdits"))
    )


DEVICE_FIELDS: _Table = {
    "name": ("name", None),
    "annotations": ("annotations", _string_map),
    "containerEdits": ("container_edits", _edits),
}
_DEVICE_FOLDED = _fold(DEVICE_FIELDS)


def _device(value: object) -> Device:
    return build_device(_drop_nulls(_fields(value, DEVICE_FIELDS, _DEVICE_FOLDED, "a device")))


def build_device(kwargs: dict[str, Any]) -> Device:
    """A Device from converted fields."""
    return Device(kwargs.pop("name", ""), **kwargs)


SPEC_FIELDS: _Table = {
    "cdiVersion": ("version", None),
    "kind": ("kind", None),
    "annotations": ("annotations", _string_map),
    "devices": ("devices", None),  # handled in spec_from_data to name the failing device
    "containerEdits": ("container_edits", _edits),
}
_SPEC_FOLDED = _fold(SPEC_FIELDS)


def _device_where(raw: object, index: int) -> str:
    if type(raw) is dict:
        for key, value in raw.items():
            if key.lower() == "name" and type(value) is str:
                return f"device {quote(value)}"
    return f"devices[{index}]"


def spec_from_data(data: object, source: str) -> Spec:
    """Build a Spec from decoded YAML/JSON data; SpecError names the field and value."""
    if data is None:
        raise SpecError(source, "no spec data (empty file or empty YAML document)")
    if type(data) is not dict:
        raise SpecError(source, f"the top level must be a mapping, got {describe(data)}")
    raw_devices = None
    body = data
    for key in data:
        if key.lower() == "devices":
            raw_devices = data[key]
            body = {k: v for k, v in data.items() if k != key}
            # keep the key so that two spellings of "devices" are still reported
            body[key] = None
            break
    try:
        kwargs = _drop_nulls(_fields(body, SPEC_FIELDS, _SPEC_FOLDED, "the spec"))
    except _Bad as bad:
        raise SpecError(source, bad.reason, bad.path.lstrip(".")) from None
    devices: tuple[Device, ...] = ()
    if raw_devices is not None:
        if type(raw_devices) is not list:
            raise SpecError(
                source, f"expected a list of devices, got {describe(raw_devices)}", "devices"
            )
        try:
            devices = tuple([_device(raw) for raw in raw_devices])
        except _Bad:
            for index, raw in enumerate(raw_devices):
                try:
                    _device(raw)
                except _Bad as bad:
                    where = _device_where(raw, index)
                    path = bad.path.lstrip(".")
                    raise SpecError(
                        source, bad.reason, f"{where}: {path}" if path else where
                    ) from None
            raise
    return build_spec(kwargs, devices)


def build_spec(kwargs: dict[str, Any], devices: tuple[Device, ...]) -> Spec:
    """A Spec from converted fields (missing cdiVersion/kind are "", as Go leaves them)."""
    return Spec(kwargs.pop("version", ""), kwargs.pop("kind", ""), devices=devices, **kwargs)
