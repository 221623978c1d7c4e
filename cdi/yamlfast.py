"""The fast road from YAML to the model: libyaml events straight into attrs objects.

It handles the documents real producers write (one document, plain or quoted string
scalars, decimal integers, block or flow collections) in one pass with no intermediate
dicts. Anything else (tags, aliases, nulls, booleans, case-folded or unknown keys, duplicate
keys, wrong types, a second document, a `\\/` escape, a syntax error) raises `Unusual`, and the
caller takes the general road (`cdi.yamlload` + `cdi.schema`), which defines the semantics
and words the errors. The two roads must build equal specs; tests/cdi check it on random
documents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from yaml import YAMLError
from yaml import events as ev
from yaml._yaml import CParser

from cdi.schema import build_device, build_hook, build_mount, build_node, build_spec
from cdi.spec import ContainerEdits, Device, DeviceNode, Hook, IntelRdt, Mount, Spec
from cdi.yamlload import (
    NON_STRING_WORDS,
    NUMBER_START,
    has_slash_escape,
    paused_gc,
    resolve_plain,
)


class Unusual(Exception):
    """The document needs the general road."""


_SCALAR = ev.ScalarEvent
_SEQ_START = ev.SequenceStartEvent
_SEQ_END = ev.SequenceEndEvent
_MAP_START = ev.MappingStartEvent
_MAP_END = ev.MappingEndEvent
_Get = Callable[[], Any]

# Field kinds of the fast road; nested kinds are the parse functions themselves.
_STR, _INT64, _UINT32, _STRS, _UINTS = range(5)
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _string(event: Any) -> str:
    if type(event) is not _SCALAR or event.tag is not None:
        raise Unusual
    text: str = event.value
    if (
        event.implicit[0]
        and (not text or text[0] in NUMBER_START or text in NON_STRING_WORDS)
        and type(resolve_plain(text)) is not str
    ):
        raise Unusual
    return text


def _integer(event: Any, low: int, high: int) -> int:
    if type(event) is not _SCALAR or event.tag is not None or not event.implicit[0]:
        raise Unusual
    text: str = event.value
    if text.isdigit() and text.isascii() and (text[0] != "0" or len(text) == 1):
        value: object = int(text)  # plain decimal, the common case
    else:
        value = resolve_plain(text)
    if type(value) is not int or not low <= value <= high:
        raise Unusual
    return value


def _strings(get: _Get, start: Any) -> tuple[str, ...]:
    if type(start) is not _SEQ_START or start.tag is not None:
        raise Unusual
    items: list[str] = []
    append = items.append
    while True:
        event = get()
        if type(event) is not _SCALAR:
            if type(event) is _SEQ_END:
                return tuple(items)
            raise Unusual
        append(_string(event))


def _uints(get: _Get, start: Any) -> tuple[int, ...]:
    if type(start) is not _SEQ_START or start.tag is not None:
        raise Unusual
    items: list[int] = []
    while True:
        event = get()
        if type(event) is _SEQ_END:
            return tuple(items)
        items.append(_integer(event, 0, 0xFFFFFFFF))


def _fields(get: _Get, start: Any, table: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """The converted fields of one mapping whose MappingStart event is `start`.

    Anchors are not checked anywhere: an anchor only matters when an alias uses it, and an
    AliasEvent is never the event type expected here, so it always raises Unusual.
    """
    if type(start) is not _MAP_START or start.tag is not None:
        raise Unusual
    kwargs: dict[str, Any] = {}
    while True:
        key = get()
        if type(key) is not _SCALAR:
            if type(key) is _MAP_END:
                return kwargs
            raise Unusual
        entry = table.get(key.value)
        # Field names are plain words, so a plain or quoted key with that text is that string.
        if entry is None or key.tag is not None:
            raise Unusual
        attr, kind = entry
        if attr in kwargs:
            raise Unusual
        value = get()
        if kind is _STR:
            # _string, inlined: this is the hottest line of a spec load
            if type(value) is not _SCALAR or value.tag is not None:
                raise Unusual
            text = value.value
            if (
                value.implicit[0]
                and (not text or text[0] in NUMBER_START or text in NON_STRING_WORDS)
                and type(resolve_plain(text)) is not str
            ):
                raise Unusual
            kwargs[attr] = text
        elif kind is _INT64 or kind is _UINT32:
            # _integer, inlined for the plain decimal case
            if type(value) is _SCALAR and value.tag is None and value.implicit[0]:
                text = value.value
                if text.isdigit() and text.isascii() and text[0] != "0" and len(text) < 10:
                    kwargs[attr] = int(text)  # < 10 digits: in range for both kinds
                    continue
            if kind is _INT64:
                kwargs[attr] = _integer(value, _INT64_MIN, _INT64_MAX)
            else:
                kwargs[attr] = _integer(value, 0, 0xFFFFFFFF)
        elif kind is _STRS:
            kwargs[attr] = _strings(get, value)
        elif kind is _UINTS:
            kwargs[attr] = _uints(get, value)
        else:
            kwargs[attr] = kind(get, value)


def _objects(
    get: _Get, start: Any, table: dict[str, tuple[str, Any]], build: Callable[[Any], Any]
) -> tuple[Any, ...]:
    """A list of mappings, each built with `build` from its fields."""
    if type(start) is not _SEQ_START or start.tag is not None:
        raise Unusual
    items: list[Any] = []
    append = items.append
    while True:
        event = get()
        if type(event) is _SEQ_END:
            return tuple(items)
        append(build(_fields(get, event, table)))


_NODE = {
    "path": ("path", _STR),
    "hostPath": ("host_path", _STR),
    "type": ("type", _STR),
    "major": ("major", _INT64),
    "minor": ("minor", _INT64),
    "fileMode": ("file_mode", _UINT32),
    "permissions": ("permissions", _STR),
    "uid": ("uid", _UINT32),
    "gid": ("gid", _UINT32),
}
_MOUNT = {
    "hostPath": ("host_path", _STR),
    "containerPath": ("container_path", _STR),
    "options": ("options", _STRS),
    "type": ("type", _STR),
}
_HOOK = {
    "hookName": ("hook_name", _STR),
    "path": ("path", _STR),
    "args": ("args", _STRS),
    "env": ("env", _STRS),
    "timeout": ("timeout", _INT64),
}
_RDT = {
    "closID": ("clos_id", _STR),
    "l3CacheSchema": ("l3_cache_schema", _STR),
    "memBwSchema": ("mem_bw_schema", _STR),
}


def _node_list(get: _Get, start: Any) -> tuple[DeviceNode, ...]:
    return _objects(get, start, _NODE, build_node)


def _hook_list(get: _Get, start: Any) -> tuple[Hook, ...]:
    return _objects(get, start, _HOOK, build_hook)


def _mount_list(get: _Get, start: Any) -> tuple[Mount, ...]:
    return _objects(get, start, _MOUNT, build_mount)


def _intel_rdt(get: _Get, start: Any) -> IntelRdt:
    return IntelRdt(**_fields(get, start, _RDT))


def _string_map(get: _Get, start: Any) -> dict[str, str]:
    if type(start) is not _MAP_START or start.tag is not None:
        raise Unusual
    result: dict[str, str] = {}
    while True:
        key = get()
        if type(key) is _MAP_END:
            return result
        name = _string(key)
        if name in result:
            raise Unusual
        result[name] = _string(get())


_EDITS = {
    "env": ("env", _STRS),
    "deviceNodes": ("device_nodes", _node_list),
    "hooks": ("hooks", _hook_list),
    "mounts": ("mounts", _mount_list),
    "intelRdt": ("intel_rdt", _intel_rdt),
    "additionalGids": ("additional_gids", _UINTS),
}


def _edits(get: _Get, start: Any) -> ContainerEdits:
    return ContainerEdits(**_fields(get, start, _EDITS))


_DEVICE = {
    "name": ("name", _STR),
    "annotations": ("annotations", _string_map),
    "containerEdits": ("container_edits", _edits),
}


def _device_list(get: _Get, start: Any) -> tuple[Device, ...]:
    return _objects(get, start, _DEVICE, build_device)


_SPEC = {
    "cdiVersion": ("version", _STR),
    "kind": ("kind", _STR),
    "annotations": ("annotations", _string_map),
    "devices": ("devices", _device_list),
    "containerEdits": ("container_edits", _edits),
}

# For the test that keeps both roads in step: the field tables of the fast road.
TABLES = {
    "node": _NODE,
    "mount": _MOUNT,
    "hook": _HOOK,
    "rdt": _RDT,
    "edits": _EDITS,
    "device": _DEVICE,
    "spec": _SPEC,
}


def parse_spec_fast(data: bytes | str) -> Spec:
    """The Spec of a plain single-document YAML text; `Unusual` if it needs the general road.

    No validation here. The garbage collector is paused: the parse allocates many objects
    that all stay alive, and collections would only rescan them.
    """
    if has_slash_escape(data):
        raise Unusual  # maybe an escape the reference rejects: the general road checks
    try:
        with paused_gc():
            get: _Get = CParser(data).get_event
            if type(get()) is not ev.StreamStartEvent or type(get()) is not ev.DocumentStartEvent:
                raise Unusual
            kwargs = _fields(get, get(), _SPEC)
            if type(get()) is not ev.DocumentEndEvent or type(get()) is not ev.StreamEndEvent:
                raise Unusual
            return build_spec(kwargs, kwargs.pop("devices", ()))
    except YAMLError:
        raise Unusual from None
