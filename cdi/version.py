"""Which cdiVersion a spec needs: the reference library's version table (specs-go/version.go).

A model field that is set (not None, not empty) needs the version its declaration names
(`since`, in cdi.spec); two more rules are about values, not fields (below). A spec needs the
highest of these versions, and at least FLOOR_VERSION.
"""

# Annotations are evaluated (no `from __future__ import annotations`): a NamedTuple's string
# annotations are each compiled at class creation, on every `gpu-cdi` start.
from collections.abc import Iterator
from typing import Any, NamedTuple

from cdi.errors import quote
from cdi.spec import Device, Spec, Wire, declared

# The versions the reference 0.8.0 knows. 0.1.0 and 0.2.0 are "known" but every spec needs
# at least 0.3.0, so they always fail the minimum-version check (as in the reference).
KNOWN_VERSIONS: dict[str, tuple[int, int, int]] = {
    f"0.{minor}.0": (0, minor, 0) for minor in range(1, 9)
}
FLOOR_VERSION = "0.3.0"
LATEST_VERSION = "0.8.0"
# The rules about values: a device name may start with a digit (or any non-letter) from 0.5.0
# on, and the class part of `kind` may hold a '.' from 0.6.0 on.
NAME_NOT_LETTER_VERSION = "0.5.0"
CLASS_DOT_VERSION = "0.6.0"


def parse_version(version: str) -> tuple[int, int, int] | None:
    """The version as a tuple if the reference knows it (an optional leading `v` is allowed)."""
    return KNOWN_VERSIONS.get(version[1:] if version.startswith("v") else version)


class _Rules(NamedTuple):
    """The version rules of one model class, derived from its field declarations."""

    fields: tuple[tuple[str, str, str], ...]  # (attr, key, since): set, it needs `since`
    children: tuple[tuple[str, str, bool, Any], ...]  # (attr, key, many, rules) with rules
    top: tuple[int, int, int]  # the highest version anything in this subtree can need


def _rules(cls: type) -> _Rules:
    fields = []
    children = []
    top = KNOWN_VERSIONS[FLOOR_VERSION]
    for item in declared(cls):
        since = item.field.since
        if since is not None:
            fields.append((item.attr, item.field.key, since))
            top = max(top, KNOWN_VERSIONS[since])
        nested = item.field.of
        if item.field.wire is Wire.OBJECT and nested is not None and nested is not Device:
            rules = _rules(nested)
            if rules.fields or rules.children:
                children.append((item.attr, item.field.key, item.field.many, rules))
                top = max(top, rules.top)
    return _Rules(tuple(fields), tuple(children), top)


# Devices are walked by the spec's own loop (the message names a device by its name).
_DEVICE = _rules(Device)
_SPEC = _rules(Spec)
_TOP = max(_DEVICE.top, _SPEC.top, KNOWN_VERSIONS[CLASS_DOT_VERSION])


def _shown(value: object) -> str:
    return f" {quote(value)}" if type(value) is str else ""


def _field_requirements(obj: object, rules: _Rules, where: str) -> Iterator[tuple[str, str]]:
    for attr, key, since in rules.fields:
        value = getattr(obj, attr)
        if value:
            yield since, f"{where}{key}{_shown(value)}"
    for attr, key, many, nested in rules.children:
        value = getattr(obj, attr)
        if many:
            for index, item in enumerate(value):
                yield from _field_requirements(item, nested, f"{where}{key}[{index}].")
        elif value is not None:
            yield from _field_requirements(value, nested, f"{where}{key}.")


def version_requirements(spec: Spec) -> Iterator[tuple[str, str]]:
    """Every (version, reason) that the content of `spec` requires, beyond the floor."""
    if spec.vendor and "." in spec.cls:
        yield CLASS_DOT_VERSION, f"'.' in class {quote(spec.cls)}"
    yield from _field_requirements(spec, _SPEC, "")
    for device in spec.devices:
        name = device.name
        if name and not ("A" <= name[0] <= "Z" or "a" <= name[0] <= "z"):
            yield NAME_NOT_LETTER_VERSION, f"device name {quote(name)} not starting with a letter"
        yield from _field_requirements(device, _DEVICE, f"device {quote(name)}: ")


def _highest(obj: object, rules: _Rules, best: tuple[int, int, int]) -> tuple[int, int, int]:
    """The highest of `best` and what `obj` needs; subtrees that cannot raise it are skipped."""
    for attr, _, since in rules.fields:
        key = KNOWN_VERSIONS[since]
        if key > best and getattr(obj, attr):
            best = key
    for attr, _, many, nested in rules.children:
        if nested.top <= best:
            continue
        value = getattr(obj, attr)
        if many:
            for item in value:
                best = _highest(item, nested, best)
        elif value is not None:
            best = _highest(value, nested, best)
    return best


def minimum_version(spec: Spec) -> str:
    """The lowest cdiVersion that can express `spec` (the reference's MinimumRequiredVersion).

    The rules of `version_requirements`, without building the reasons: this runs on every load.
    """
    best = KNOWN_VERSIONS[FLOOR_VERSION]
    if spec.vendor and "." in spec.cls:
        best = KNOWN_VERSIONS[CLASS_DOT_VERSION]
    best = _highest(spec, _SPEC, best)
    name_key = KNOWN_VERSIONS[NAME_NOT_LETTER_VERSION]
    for device in spec.devices:
        if best >= _TOP:
            break
        name = device.name
        if best < name_key and name and not ("A" <= name[0] <= "Z" or "a" <= name[0] <= "z"):
            best = name_key
        best = _highest(device, _DEVICE, best)
    return "{}.{}.{}".format(*best)


def minimum_requirement(spec: Spec) -> tuple[str, str]:
    """The minimum cdiVersion of `spec` and the first reason for it ("" at the floor)."""
    required = minimum_version(spec)
    for version, reason in version_requirements(spec):
        if version == required:
            return required, reason
    return required, ""


def version_error(spec: Spec) -> str | None:
    """Why `spec.version` is unknown or too old for its content, or None."""
    key = parse_version(spec.version)
    if key is None:
        return (
            f"invalid cdiVersion {quote(spec.version)}: not a version the reference library "
            f"0.8.0 knows ({FLOOR_VERSION} to {LATEST_VERSION}, optionally with a leading 'v')"
        )
    short = shortfall(spec, key)
    return None if short is None else f"cdiVersion {quote(spec.version)} is too old: {short}"


def shortfall(spec: Spec, key: tuple[int, int, int]) -> str | None:
    """Why the version `key` (from `parse_version`) is too old for `spec`, e.g. `needs at
    least 0.5.0 (device node hostPath "/x" needs it)`, or None when it is new enough. The
    reason is looked for only then: the minimum alone is cheaper."""
    required = minimum_version(spec)
    if key >= KNOWN_VERSIONS[required]:
        return None
    why = minimum_requirement(spec)[1]
    reason = f" ({why} needs it)" if why else " (the oldest usable spec version)"
    return f"needs at least {required}{reason}"


def since(cls: type, attr: str) -> str:
    """The first cdiVersion that allows field `attr` of model class `cls` to be set."""
    for item in declared(cls):
        if item.attr == attr:
            return item.field.since or FLOOR_VERSION
    raise KeyError(f"{cls.__name__} has no CDI field {attr!r}")
