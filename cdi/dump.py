"""Write the model as CDI YAML or JSON text, exact keys in the reference's struct order.

YAML is emitted directly (block style, `---` first): strings that any YAML 1.1 or 1.2 reader
could take for something else (`0`, `on`, `y`, `0o17`, `1e5`, `0:1`, dates) are quoted, and
characters YAML does not allow raw are escaped, so the text loads back to an equal Spec.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from cdi.errors import escape_char
from cdi.spec import Spec, Wire, declared

# How a field's value is written as data: as it is, as a list, as a dict, as nested object(s).
_VALUE, _LIST, _MAP, _OBJECT, _OBJECTS = range(5)
# class -> (key, attribute, default, always written, how, `key:` in YAML), in writing order
_Table = tuple[tuple[str, str, object, bool, int, str], ...]
_TABLES: dict[type, _Table] = {}


def _table(cls: type) -> _Table:
    table = _TABLES.get(cls)
    if table is None:
        rows = []
        for item in declared(cls):
            field = item.field
            if field.of is not None:
                how = _OBJECTS if field.many else _OBJECT
            elif field.many:
                how = _LIST
            else:
                how = _MAP if field.wire is Wire.STRING_MAP else _VALUE
            head = yaml_string(field.key) + ":"
            rows.append((field.key, item.attr, item.default, field.always, how, head))
        table = _TABLES[cls] = tuple(rows)
    return table


def to_data(obj: object) -> dict[str, Any]:
    """A model object as CDI JSON data: exact keys in the reference's order, and fields left
    out where the reference leaves them out (empty, unless always written)."""
    out: dict[str, Any] = {}
    for key, attr, default, always, how, _ in _table(type(obj)):
        value = getattr(obj, attr)
        if not always and (value is default or (default is not None and value == default)):
            continue
        if how is _VALUE:
            out[key] = value
        elif how is _OBJECTS:
            out[key] = [to_data(item) for item in value]
        elif how is _OBJECT:
            out[key] = to_data(value)
        else:
            out[key] = list(value) if how is _LIST else dict(value)
    return out


_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Strings that may be written plain: no YAML indicator at the start, no spaces, no ': '.
_PLAIN_FIRST = frozenset(_ALNUM + "/_.")
_PLAIN_REST = frozenset(_ALNUM + "/_.:=,+@%-")
# Anything that looks like a number, date or time to some YAML reader is quoted.
_NUMBER_FIRST = frozenset("-+.0123456789")
_NUMBER_REST = frozenset(_ALNUM + "-+._:")
_WORDS = frozenset(
    ("y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", ".inf", ".nan")
)
# YAML 1.1 printable characters; everything else is escaped (0x85, U+2028 and U+2029 are line
# breaks there, U+FEFF a byte order mark).
_PRINTABLE = "\t\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd"


@functools.cache
def _unprintable() -> re.Pattern[str]:
    # Compiled on first use: most specs are ASCII.
    return re.compile(f"[^{_PRINTABLE}\U00010000-\U0010ffff]")


def yaml_string(value: str) -> str:
    """`value` as a YAML scalar that every YAML 1.1/1.2 reader reads back as this string."""
    if (
        value
        and value[0] in _PLAIN_FIRST
        and _PLAIN_REST.issuperset(value)
        and value[-1] != ":"
        and not (value[0] in _NUMBER_FIRST and _NUMBER_REST.issuperset(value))
        and value.lower() not in _WORDS
    ):
        return value
    body = value.replace("\\", "\\\\").replace('"', '\\"')
    body = body.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    if not body.isascii() or not body.isprintable():
        body = _unprintable().sub(lambda match: escape_char(match.group()), body)
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
    return _unprintable().sub(lambda match: f"\\u{ord(match.group()):04x}", text)


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


def _scalar_text(value: object, strings: dict[str, str]) -> str:
    """`value` as a YAML scalar; strings through the cache `strings`."""
    if type(value) is not str:
        return _yaml_scalar(value)
    text = strings.get(value)
    if text is None:
        text = strings[value] = yaml_string(value)
    return text


def _yaml_object(
    obj: object,
    indent: str,
    out: list[str],
    strings: dict[str, str],
    seen: dict[tuple[int, str], list[str]],
) -> None:
    """Append the lines of model object `obj` (a mapping) at `indent`.

    A spec repeats itself: `strings` caches how each string is written (paths, options, hook
    arguments), `seen` the lines of each nested object or list (the devices named by index and
    by UUID share their edits, the mounts their options)."""
    inner = indent + "  "
    for _, attr, default, always, how, written in _table(type(obj)):
        value = getattr(obj, attr)
        if not always and (value is default or (default is not None and value == default)):
            continue
        head = indent + written
        if how is _VALUE:
            out.append(f"{head} {_scalar_text(value, strings)}")
        elif how is _OBJECT:
            key = (id(value), inner)
            lines = seen.get(key)
            if lines is None:
                start = len(out)
                _yaml_object(value, inner, out, strings, seen)
                lines = seen[key] = out[start:]
                del out[start:]
            if lines:
                out.append(head)
                out.extend(lines)
            else:
                out.append(head + " {}")
        elif not value:
            out.append(head + (" {}" if how is _MAP else " []"))
        elif how is _OBJECTS:
            out.append(head)
            deeper = inner + "  "
            for item in value:
                start = len(out)
                _yaml_object(item, deeper, out, strings, seen)
                if len(out) == start:
                    out.append(f"{inner}- {{}}")
                else:
                    out[start] = f"{inner}- {out[start][len(deeper) :]}"
        elif how is _LIST:
            out.append(head)
            key = (id(value), inner)
            lines = seen.get(key)
            if lines is None:  # mounts share their options
                lines = seen[key] = [f"{inner}- {_scalar_text(item, strings)}" for item in value]
            out.extend(lines)
        else:
            out.append(head)
            _yaml_mapping(value, inner, out)


def dump_spec(spec: Spec, fmt: str = "yaml") -> str:
    """The spec as YAML or JSON text that loads back to an equal Spec (no validation)."""
    if fmt != "yaml":
        return dump_data(to_data(spec), fmt)
    out = ["---"]
    _yaml_object(spec, "", out, {}, {})
    out.append("")
    return "\n".join(out)
