"""Qualified device names (`vendor.com/class=name`), the vendor/class/device-name rules and the
`cdi.k8s.io/` annotation API, with the reference library's (0.8.0) rules.

The reference checks names with hand-written character loops; the character-set checks below
accept exactly the same strings (ASCII letters and digits only) and run in C. Where the
reference crashes (one-character vendor or class) we raise a clean error instead.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from cdi.errors import AnnotationError, InvalidNameError, quote

ANNOTATION_PREFIX = "cdi.k8s.io/"

_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ALNUM = _LETTERS | frozenset("0123456789")
_NAME_INSIDE = _ALNUM | frozenset("_.-")
_DEVICE_INSIDE = _NAME_INSIDE | frozenset(":")
_ANNOTATION_NAME_MAX = 63


def _is_name(value: str, first: frozenset[str], inside: frozenset[str]) -> bool:
    """`value` starts with a `first` character, ends with a letter or digit, and has only
    `inside` characters (a vendor, class or device name)."""
    return bool(value) and value[0] in first and value[-1] in _ALNUM and inside.issuperset(value)


class QualifiedName(NamedTuple):
    """A parsed `vendor/class=name`."""

    vendor: str
    cls: str
    name: str

    @property
    def kind(self) -> str:
        """`vendor/class`, the spec's `kind`."""
        return f"{self.vendor}/{self.cls}"

    def __str__(self) -> str:
        return f"{self.vendor}/{self.cls}={self.name}"


def _explain(value: str, what: str, first_rule: str, inside: frozenset[str], allowed: str) -> str:
    """Why `value` breaks a name rule (only called on failure, so it may be slow)."""
    if not value:
        return f'invalid {what} "": empty'
    quoted = quote(value)
    first = value[0]
    if first not in _ALNUM or (first_rule == "letter" and first.isdigit()):
        start = "a letter" if first_rule == "letter" else "a letter or digit"
        return f"invalid {what} {quoted}: must start with {start}"
    for char in value[1:-1]:
        if char not in inside:
            return f"invalid {what} {quoted}: invalid character {char!r} (allowed: {allowed})"
    return f"invalid {what} {quoted}: must end with a letter or digit"


_VENDOR_ALLOWED = "letters, digits, '_', '.', '-' inside"
_DEVICE_ALLOWED = "letters, digits, '_', '.', ':', '-' inside"


def vendor_error(vendor: str) -> str | None:
    """Why `vendor` is not a valid vendor name, or None when it is."""
    if _is_name(vendor, _LETTERS, _NAME_INSIDE):
        if len(vendor) == 1:
            return (
                f"invalid vendor {quote(vendor)}: must be at least 2 characters "
                "(the reference library 0.8.0 crashes on one-character vendors)"
            )
        return None
    return _explain(vendor, "vendor", "letter", _NAME_INSIDE, _VENDOR_ALLOWED)


def class_error(cls: str) -> str | None:
    """Why `cls` is not a valid device class, or None when it is."""
    if _is_name(cls, _LETTERS, _NAME_INSIDE):
        if len(cls) == 1:
            return (
                f"invalid class {quote(cls)}: must be at least 2 characters "
                "(the reference library 0.8.0 crashes on one-character classes)"
            )
        return None
    return _explain(cls, "class", "letter", _NAME_INSIDE, _VENDOR_ALLOWED)


def device_name_error(name: str) -> str | None:
    """Why `name` is not a valid device name, or None when it is."""
    if _is_name(name, _ALNUM, _DEVICE_INSIDE):
        return None
    return _explain(name, "device name", "alnum", _DEVICE_INSIDE, _DEVICE_ALLOWED)


def validate_vendor(vendor: str) -> None:
    """Raise InvalidNameError unless `vendor` is a valid vendor name."""
    if (error := vendor_error(vendor)) is not None:
        raise InvalidNameError(error)


def validate_class(cls: str) -> None:
    """Raise InvalidNameError unless `cls` is a valid device class."""
    if (error := class_error(cls)) is not None:
        raise InvalidNameError(error)


def validate_device_name(name: str) -> None:
    """Raise InvalidNameError unless `name` is a valid device name."""
    if (error := device_name_error(name)) is not None:
        raise InvalidNameError(error)


def parse_qualifier(kind: str) -> tuple[str, str]:
    """Split `vendor/class` at the first `/`; vendor is "" when either side is missing."""
    vendor, sep, cls = kind.partition("/")
    if not sep or not vendor or not cls:
        return "", kind
    return vendor, cls


def parse_device(device: str) -> tuple[str, str, str]:
    """Split `vendor/class=name` without validating; vendor and class are "" if unqualified."""
    if not device or device[0] == "/":
        return "", "", device
    qualifier, sep, name = device.partition("=")
    if not sep or not qualifier or not name:
        return "", "", device
    vendor, cls = parse_qualifier(qualifier)
    if not vendor:
        return "", "", device
    return vendor, cls, name


def qualified_name_error(device: str) -> str | None:
    """Why `device` is not a valid qualified device name, or None when it is."""
    vendor, cls, name = parse_device(device)
    if not vendor:
        return (
            f'unqualified device {quote(device)}, missing vendor (expected "vendor.com/class=name")'
        )
    for error in (vendor_error(vendor), class_error(cls), device_name_error(name)):
        if error is not None:
            return f"invalid device {quote(device)}: {error}"
    return None


def parse_qualified_name(device: str) -> QualifiedName:
    """Parse and validate `vendor/class=name`; raise InvalidNameError naming the broken rule."""
    vendor, cls, name = parse_device(device)
    error = qualified_name_error(device)
    if error is not None:
        raise InvalidNameError(error)
    return QualifiedName(vendor, cls, name)


def is_qualified_name(device: str) -> bool:
    """True when `device` is a valid qualified device name."""
    return qualified_name_error(device) is None


def qualified_name(vendor: str, cls: str, name: str) -> str:
    """Join the parts into `vendor/class=name` (no validation, like the reference)."""
    return f"{vendor}/{cls}={name}"


def annotation_key(plugin: str, device_id: str) -> str:
    """The `cdi.k8s.io/<plugin>_<deviceID>` key for a device request, as the reference builds it."""
    if not plugin:
        raise AnnotationError("invalid plugin name, empty")
    if not device_id:
        raise AnnotationError("invalid deviceID, empty")
    name = plugin + "_" + device_id.replace("/", "_")
    quoted = quote(name)
    if len(name) > _ANNOTATION_NAME_MAX:
        raise AnnotationError(
            f"invalid plugin+deviceID {quoted}, too long ({len(name)} > {_ANNOTATION_NAME_MAX})"
        )
    if name[0] not in _ALNUM:
        raise AnnotationError(f"invalid name {quoted}, first {name[0]!r} should be alphanumeric")
    for char in name[1:-1]:
        if char not in _NAME_INSIDE:
            raise AnnotationError(
                f"invalid name {quoted}, invalid character {char!r} (allowed: {_VENDOR_ALLOWED})"
            )
    if name[-1] not in _ALNUM:
        raise AnnotationError(f"invalid name {quoted}, last {name[-1]!r} should be alphanumeric")
    return ANNOTATION_PREFIX + name


def annotation_value(devices: Iterable[str]) -> str:
    """Validate qualified names and join them with `,` (the annotation value)."""
    checked = []
    for device in devices:
        error = qualified_name_error(device)
        if error is not None:
            raise AnnotationError(error)
        checked.append(device)
    return ",".join(checked)


def parse_annotations(annotations: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The `cdi.k8s.io/` keys and the devices they request, in map order.

    As in the reference, one invalid device in any value fails the whole map.
    """
    keys: list[str] = []
    devices: list[str] = []
    for key, value in annotations.items():
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        for device in value.split(","):
            error = qualified_name_error(device)
            if error is not None:
                raise AnnotationError(
                    f"annotation {quote(key)}: invalid CDI device name {quote(device)}: {error}"
                )
            devices.append(device)
        keys.append(key)
    return keys, devices


def update_annotations(
    annotations: Mapping[str, str], plugin: str, device_id: str, devices: Iterable[str]
) -> dict[str, str]:
    """A copy of `annotations` with the request for `devices` added; the key must be new."""
    key = annotation_key(plugin, device_id)
    value = annotation_value(devices)
    if key in annotations:
        raise AnnotationError(f"CDI annotation failed, key {quote(key)} used")
    updated = dict(annotations)
    updated[key] = value
    return updated


_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"


@functools.cache
def _k8s_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """A DNS subdomain and a Kubernetes name (compiled on first use: few specs annotate)."""
    return (
        re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*\Z"),
        re.compile(r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z"),
    )


_DNS_SUBDOMAIN_MAX = 253
_ANNOTATIONS_TOTAL_MAX = 256 * 1024


def spec_annotation_error(annotations: Mapping[str, str]) -> str | None:
    """Why a spec or device `annotations` map is invalid (Kubernetes key rules), or None."""
    total = 0
    for key, value in annotations.items():
        total += len(key) + len(value)
        error = _k8s_key_error(key.lower())
        if error is not None:
            return f"invalid annotation key {quote(key)}: {error}"
    if total > _ANNOTATIONS_TOTAL_MAX:
        return (
            f"annotations too large: {total} bytes of keys and values "
            f"(at most {_ANNOTATIONS_TOTAL_MAX})"
        )
    return None


def _k8s_key_error(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) > 2:
        return "a qualified name has at most one '/' (optional DNS prefix, then a name)"
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            return "the prefix before '/' is empty"
        if len(prefix) > _DNS_SUBDOMAIN_MAX:
            return f"the prefix is longer than {_DNS_SUBDOMAIN_MAX} characters"
        if _k8s_patterns()[0].match(prefix) is None:
            return (
                f"the prefix {quote(prefix)} is not a DNS subdomain "
                "(lower-case letters, digits, '-', '.' separated labels)"
            )
    if not name:
        return "the name part is empty"
    if len(name) > _ANNOTATION_NAME_MAX:
        return f"the name part is longer than {_ANNOTATION_NAME_MAX} characters"
    if _k8s_patterns()[1].match(name) is None:
        return (
            f"the name part {quote(name)} must start and end with a letter or digit, "
            "with only letters, digits, '-', '_', '.' inside"
        )
    return None
