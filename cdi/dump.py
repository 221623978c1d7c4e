"""Write the model as CDI YAML or JSON text, exact keys in the reference's struct order.

YAML is emitted directly (block style, `---` first): strings that any YAML 1.1 or 1.2 reader
could take for something else (`0`, `on`, `y`, `0o17`, `1e5`, `0:1`, dates) are quoted, and
characters YAML does not allow raw are escaped, so the text loads back to an equal Spec.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cdi.spec import Spec, declared

# class -> (key, attribute, default, always written, nested class, list), in writing order
_Table = tuple[tuple[str, str, object, bool, Any, bool], ...]
_TABLES: dict[type, _Table] = {}


def _table(cls: type) -> _Table:
    table = _TABLES.get(cls)
    if table is None:
        table = _TABLES[cls] = tuple(
            (
                item.field.key,
                item.attr,
                item.default,
                item.field.always,
                item.field.of,
                item.field.many,
            )
            for item in declared(cls)
        )
    return table


def to_data(obj: object) -> dict[str, Any]:
    """A model object as CDI JSON data: exact keys in the reference's order, and fields left
    out where the reference leaves them out (empty, unless always written)."""
    out: dict[str, Any] = {}
    for key, attr, default, always, nested, many in _table(type(obj)):
        value = getattr(obj, attr)
        if not always and value == default:
            continue
        if nested is not None:
            value = [to_data(item) for item in value] if many else to_data(value)
        elif many:
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[key] = value
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
    import json

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
    return dump_data(to_data(spec), fmt)
