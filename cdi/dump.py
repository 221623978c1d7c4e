"""Write the model as CDI YAML or JSON text, exact keys in the reference's struct order.

YAML is emitted directly (block style, `---` first): strings that any YAML 1.1 or 1.2 reader
could take for something else (`0`, `on`, `y`, `0o17`, `1e5`, `0:1`, dates) are quoted, and
characters YAML does not allow raw are escaped, so the text loads back to an equal Spec.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from cdi.spec import ContainerEdits, DeviceNode, Spec


def _put(out: dict[str, Any], key: str, value: object) -> None:
    if value is not None and value != ():
        out[key] = list(value) if type(value) is tuple else value


def _node_data(node: DeviceNode) -> dict[str, Any]:
    out: dict[str, Any] = {"path": node.path}
    _put(out, "hostPath", node.host_path)
    _put(out, "type", node.type)
    _put(out, "major", node.major)
    _put(out, "minor", node.minor)
    _put(out, "fileMode", node.file_mode)
    _put(out, "permissions", node.permissions)
    _put(out, "uid", node.uid)
    _put(out, "gid", node.gid)
    return out


def edits_to_data(edits: ContainerEdits) -> dict[str, Any]:
    """ContainerEdits as CDI JSON data (exact keys, empty fields left out)."""
    out: dict[str, Any] = {}
    _put(out, "env", edits.env)
    if edits.device_nodes:
        out["deviceNodes"] = [_node_data(node) for node in edits.device_nodes]
    if edits.hooks:
        hooks = []
        for hook in edits.hooks:
            item: dict[str, Any] = {"hookName": hook.hook_name, "path": hook.path}
            _put(item, "args", hook.args)
            _put(item, "env", hook.env)
            _put(item, "timeout", hook.timeout)
            hooks.append(item)
        out["hooks"] = hooks
    if edits.mounts:
        mounts = []
        for mount in edits.mounts:
            item = {"hostPath": mount.host_path, "containerPath": mount.container_path}
            _put(item, "options", mount.options)
            _put(item, "type", mount.type)
            mounts.append(item)
        out["mounts"] = mounts
    if edits.intel_rdt is not None:
        rdt = edits.intel_rdt
        item = {}
        _put(item, "closID", rdt.clos_id)
        _put(item, "l3CacheSchema", rdt.l3_cache_schema)
        _put(item, "memBwSchema", rdt.mem_bw_schema)
        _put(item, "enableCMT", rdt.enable_cmt)
        _put(item, "enableMBM", rdt.enable_mbm)
        out["intelRdt"] = item
    _put(out, "additionalGids", edits.additional_gids)
    return out


def spec_to_data(spec: Spec) -> dict[str, Any]:
    """The spec as CDI JSON data, keys in the reference's struct order."""
    out: dict[str, Any] = {"cdiVersion": spec.version, "kind": spec.kind}
    if spec.annotations:
        out["annotations"] = dict(spec.annotations)
    devices = []
    for device in spec.devices:
        item: dict[str, Any] = {"name": device.name}
        if device.annotations:
            item["annotations"] = dict(device.annotations)
        item["containerEdits"] = edits_to_data(device.container_edits)
        devices.append(item)
    out["devices"] = devices
    if not spec.container_edits.is_empty():
        out["containerEdits"] = edits_to_data(spec.container_edits)
    return out


# Strings that may be written plain: no YAML indicator at the start, no spaces, no ': '.
_PLAIN = re.compile(r"[A-Za-z0-9/_.][A-Za-z0-9/_.:=,+@%-]*\Z")
# Anything that looks like a number, date or time to some YAML reader is quoted.
_NUMBERISH = re.compile(r"[-+.0-9][-+.0-9A-Za-z_:]*\Z")
_WORDS = frozenset(
    ("y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", ".inf", ".nan")
)
# YAML 1.1 printable characters; everything else is escaped (0x85, U+2028 and U+2029 are line
# breaks there, U+FEFF a byte order mark).
_PRINTABLE = "\t\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd"
_UNPRINTABLE = re.compile(f"[^{_PRINTABLE}\U00010000-\U0010ffff]")


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def yaml_string(value: str) -> str:
    """`value` as a YAML scalar that every YAML 1.1/1.2 reader reads back as this string."""
    if (
        _PLAIN.match(value) is not None
        and value[-1] != ":"
        and _NUMBERISH.match(value) is None
        and value.lower() not in _WORDS
    ):
        return value
    body = value.replace("\\", "\\\\").replace('"', '\\"')
    body = body.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    if not body.isascii() or not body.isprintable():
        body = _UNPRINTABLE.sub(lambda match: _escape(match.group()), body)
    return f'"{body}"'


def _yaml_scalar(value: object) -> str:
    if type(value) is str:
        return yaml_string(value)
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as a CDI YAML scalar")


def _yaml_mapping(value: Mapping[str, Any], indent: str, out: list[str]) -> None:
    for key, item in value.items():
        head = f"{indent}{yaml_string(key)}:"
        if type(item) is dict:
            if item:
                out.append(head)
                _yaml_mapping(item, indent + "  ", out)
            else:
                out.append(head + " {}")
        elif type(item) is list:
            if item:
                out.append(head)
                _yaml_sequence(item, indent + "  ", out)
            else:
                out.append(head + " []")
        else:
            out.append(f"{head} {_yaml_scalar(item)}")


def _yaml_sequence(items: list[Any], indent: str, out: list[str]) -> None:
    inner = indent + "  "
    for item in items:
        if type(item) is dict and item:
            start = len(out)
            _yaml_mapping(item, inner, out)
            out[start] = f"{indent}- {out[start][len(inner) :]}"
        elif type(item) is dict:
            out.append(f"{indent}- {{}}")
        else:
            out.append(f"{indent}- {_yaml_scalar(item)}")


def _json_text(data: object) -> str:
    text = json.dumps(data, indent=2, ensure_ascii=False)
    # Raw non-ASCII keeps Go's YAML decoder happy (it rejects escaped surrogate pairs), but
    # characters YAML does not allow raw must still be escaped.
    return _UNPRINTABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def dump_data(data: Mapping[str, Any], fmt: str = "yaml") -> str:
    """CDI JSON data as YAML (block style, `---` first) or indented JSON, ending in newline."""
    if fmt == "json":
        return _json_text(data) + "\n"
    if fmt != "yaml":
        raise ValueError(f"unknown spec format {fmt!r} (yaml or json)")
    out = ["---"]
    _yaml_mapping(data, "", out)
    out.append("")
    return "\n".join(out)


def dump_spec(spec: Spec, fmt: str = "yaml") -> str:
    """The spec as YAML or JSON text that loads back to an equal Spec (no validation)."""
    return dump_data(spec_to_data(spec), fmt)
