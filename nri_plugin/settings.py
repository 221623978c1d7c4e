"""Settings read from YAML or flags into attrs classes, each key declared once: on its field.

A settings class declares every key as an attrs field made with `setting(default, read)`;
`read(where, value)` checks and converts one value, raising ConfigError with `where` (the
file or "command line", and the key) in front. A field holding another settings class is a
section (a nested mapping, e.g. `policy:`). `read_section` turns a mapping into a new
instance over a base one; keys and the order they are listed in come from the fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from cdi.errors import describe, quote
from cdi.names import class_error, vendor_error
from cdi.yaml11 import Yaml11Scalar

READ = "gpu_cdi_read"
"""attrs metadata key of a field's reader."""
FLAGS_SOURCE = "command line"
LIST_LIMIT = 10
"""Items of a list named in a message before "and N more"."""

T = TypeVar("T")
Reader = Callable[[str, object], Any]


class ConfigError(ValueError):
    """The configuration is invalid; the message names where, which key and which value."""


def setting(default: object = attrs.NOTHING, read: Reader | None = None, **kwargs: Any) -> Any:
    """An attrs field that is a settings key read by `read` (a section if `read` is None)."""
    return attrs.field(default=default, metadata={READ: read}, **kwargs)


def where(source: str, key: str) -> str:
    """How a message names a key: `FILE: policy.key`, or `command line: --key`."""
    if source == FLAGS_SOURCE:
        return f"{source}: --{key.replace('_', '-')}"
    return f"{source}: {key}"


def listing(values: Sequence[str]) -> str:
    """`values` joined with commas, at most LIST_LIMIT of them and how many more."""
    shown = ", ".join(values[:LIST_LIMIT])
    more = len(values) - LIST_LIMIT
    return f"{shown} and {more} more" if more > 0 else shown


def read_section(cls: type[T], data: object, source: str, base: T, prefix: str = "") -> T:
    """`base` with the keys of mapping `data` read into it (data from `source`)."""
    if not isinstance(data, Mapping):
        if not prefix:
            raise ConfigError(f"{source}: expected a mapping of settings, got {describe(data)}")
        raise ConfigError(f"{where(source, prefix[:-1])}: expected a mapping, got {describe(data)}")
    fields = attrs.fields_dict(cls)  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in data.items():
        field = fields.get(key) if isinstance(key, str) else None
        if field is None or not field.init:
            known = ", ".join(fields)
            raise ConfigError(f"{where(source, prefix + str(key))}: unknown key (known: {known})")
        read = field.metadata.get(READ)
        if read is None:
            current = getattr(base, key)
            changes[key] = read_section(type(current), value, source, current, f"{prefix}{key}.")
        else:
            changes[key] = read(where(source, prefix + key), value)
    return attrs.evolve(base, **changes)  # type: ignore[misc]


# -- readers ------------------------------------------------------------------------------


def _plain(value: object) -> object:
    # The YAML loader keeps booleans and floats as scalars that remember how they were written.
    return value.value if isinstance(value, Yaml11Scalar) else value


def string(at: str, value: object) -> str:
    """A string."""
    if not isinstance(value, str):
        raise ConfigError(f"{at}: expected a string, got {describe(value)}")
    return value


def nonempty(at: str, value: object) -> str:
    """A string that is not empty."""
    text = string(at, value)
    if not text:
        raise ConfigError(f"{at}: must not be empty")
    return text


def absolute_path(at: str, value: object) -> str:
    """An absolute path."""
    text = string(at, value)
    if not text.startswith("/"):
        raise ConfigError(f"{at}: {quote(text)} is not an absolute path")
    return text


def choice(choices: Sequence[str]) -> Reader:
    """A reader of one of `choices`."""

    def read(at: str, value: object) -> str:
        text = string(at, value)
        if text not in choices:
            raise ConfigError(f"{at}: invalid value {quote(text)} (one of: {', '.join(choices)})")
        return text

    return read


def boolean(at: str, value: object) -> bool:
    """true or false (YAML 1.1 spellings such as `yes` included)."""
    plain = _plain(value)
    if not isinstance(plain, bool):
        raise ConfigError(f"{at}: expected true or false, got {describe(value)}")
    return plain


def strings(at: str, value: object) -> tuple[str, ...]:
    """A list of strings."""
    if not isinstance(value, list):
        raise ConfigError(f"{at}: expected a list of strings, got {describe(value)}")
    return tuple(string(f"{at}[{i}]", item) for i, item in enumerate(value))


def nonempty_strings(what: str) -> Reader:
    """A reader of a list of at least one non-empty string, each a `what`."""

    def read(at: str, value: object) -> tuple[str, ...]:
        if isinstance(value, list) and not value:
            raise ConfigError(f"{at}: needs at least one {what}")
        items = strings(at, value)
        for i, item in enumerate(items):
            nonempty(f"{at}[{i}]", item)
        return items

    return read


def string_set(at: str, value: object) -> frozenset[str]:
    """A list of strings, as a set."""
    return frozenset(strings(at, value))


def optional(read: Reader) -> Reader:
    """A reader that also takes null (None: "no restriction")."""

    def read_optional(at: str, value: object) -> Any:
        return None if value is None else read(at, value)

    return read_optional


def device_kind(at: str, value: object) -> str:
    """A CDI device kind, `vendor/class`."""
    text = string(at, value)
    vendor, sep, cls = text.partition("/")
    error = None if sep else "expected vendor/class"
    error = error or vendor_error(vendor) or class_error(cls)
    if error is not None:
        raise ConfigError(f"{at}: invalid device kind {quote(text)}: {error}")
    return text


def device_kinds(at: str, value: object) -> frozenset[str]:
    """A list of CDI device kinds, as a set."""
    return frozenset(device_kind(f"{at}[{i}]", kind) for i, kind in enumerate(strings(at, value)))


def port(at: str, value: object) -> int:
    """A TCP port number, 0 included."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{at}: expected a port number 0-65535, got {describe(value)}")
    return value


def seconds(at: str, value: object) -> float:
    """A positive number of seconds."""
    plain = _plain(value)
    if isinstance(plain, bool) or not isinstance(plain, int | float) or not 0 < plain < 1e9:
        raise ConfigError(f"{at}: expected a positive number of seconds, got {describe(value)}")
    return float(plain)


def checked(read: Reader, check: Callable[[Any], str | None], what: str) -> Reader:
    """`read`, then `check(value)` (None, or why the value is bad) for a `what`."""

    def read_checked(at: str, value: object) -> Any:
        result = read(at, value)
        error = check(result)
        if error is not None:
            raise ConfigError(f"{at}: invalid {what} {quote(result)} ({error})")
        return result

    return read_checked
