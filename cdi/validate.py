"""Every validation rule of a CDI spec.

This is the only place that decides whether a spec is valid; the loader, the writer and the
registry all call `validate_spec`. The rules are the reference library's (0.8.0) plus the
deliberate differences listed in docs/cdi-deviations.md (absolute paths, annotation keys,
one-character vendor/class).
"""

from __future__ import annotations

from collections.abc import Iterable

from cdi.errors import SpecError, quote
from cdi.names import (
    class_error,
    device_name_error,
    parse_qualifier,
    spec_annotation_error,
    vendor_error,
)
from cdi.spec import HOOK_STAGES, ContainerEdits, Device, Spec
from cdi.version import version_error

NODE_TYPES = frozenset(("", "b", "c", "u", "p"))
_PERMISSION_CHARS = frozenset("rwm")
_CLOS_ID_MAX = 4096


def validate_spec(spec: Spec, source: str) -> None:
    """Raise SpecError (naming `source`, the device/field and the rule) unless `spec` is valid."""
    error = version_error(spec)
    if error is not None:
        raise SpecError(source, error, "cdiVersion")
    vendor, cls = parse_qualifier(spec.kind)
    if not vendor:
        raise SpecError(source, f'invalid kind {quote(spec.kind)}: expected "vendor/class"', "kind")
    error = vendor_error(vendor) or class_error(cls)
    if error is not None:
        raise SpecError(source, error, f"kind {quote(spec.kind)}")
    if spec.annotations:
        error = spec_annotation_error(spec.annotations)
        if error is not None:
            raise SpecError(source, error, "annotations")
    edits_error = _edits_error(spec.container_edits)
    if edits_error is not None:
        raise SpecError(source, edits_error[1], f"containerEdits{edits_error[0]}")
    seen: set[str] = set()
    valid_edits: set[int] = set()  # ids: devices may share their edits (index and UUID names)
    for device in spec.devices:
        device_error = _device_error(device, valid_edits)
        if device_error is not None:
            where, reason = device_error
            raise SpecError(source, reason, f"device {quote(device.name)}{where}")
        if device.name in seen:
            raise SpecError(
                source,
                f"duplicate device name {quote(device.name)} (names are unique in a spec)",
                f"device {quote(device.name)}",
            )
        seen.add(device.name)


def _device_error(device: Device, valid_edits: set[int]) -> tuple[str, str] | None:
    error = device_name_error(device.name)
    if error is not None:
        return "", error
    if device.annotations:
        error = spec_annotation_error(device.annotations)
        if error is not None:
            return ": annotations", error
    edits = device.container_edits
    if id(edits) in valid_edits:
        return None
    if edits.is_empty():
        return ": containerEdits", "empty device edits (every device needs at least one edit)"
    edits_error = _edits_error(edits)
    if edits_error is not None:
        return f": containerEdits{edits_error[0]}", edits_error[1]
    valid_edits.add(id(edits))
    return None


def _env_error(env: Iterable[str]) -> str | None:
    for var in env:
        if var.find("=") <= 0:
            return f"invalid environment variable {quote(var)}: must be NAME=value"
    return None


def _edits_error(edits: ContainerEdits) -> tuple[str, str] | None:
    """(field path, reason) of the first invalid edit, or None."""
    if edits.env:
        error = _env_error(edits.env)
        if error is not None:
            return ".env", error
    for index, node in enumerate(edits.device_nodes):
        path = node.path
        if not path or path[0] != "/":
            return (
                f".deviceNodes[{index}].path",
                f"invalid device node path {quote(path)}: must be an absolute path",
            )
        host_path = node.host_path
        if host_path is not None and host_path and host_path[0] != "/":
            return (
                f".deviceNodes[{index}].hostPath",
                f"invalid device node hostPath {quote(host_path)}: must be an absolute path",
            )
        if node.type is not None and node.type not in NODE_TYPES:
            return (
                f".deviceNodes[{index}].type",
                f"device {quote(path)}: invalid type {quote(node.type)} "
                '(one of "b", "c", "u", "p" or empty)',
            )
        permissions = node.permissions
        if permissions and not _PERMISSION_CHARS.issuperset(permissions):
            return (
                f".deviceNodes[{index}].permissions",
                f"device {quote(path)}: invalid permissions {quote(permissions)} "
                "(only 'r', 'w', 'm')",
            )
    for index, hook in enumerate(edits.hooks):
        if hook.hook_name not in HOOK_STAGES:
            return (
                f".hooks[{index}].hookName",
                f"invalid hook name {quote(hook.hook_name)} "
                f"(one of {', '.join(sorted(HOOK_STAGES))})",
            )
        if not hook.path or hook.path[0] != "/":
            return (
                f".hooks[{index}].path",
                f"invalid hook path {quote(hook.path)}: must be an absolute path",
            )
        if hook.env:
            error = _env_error(hook.env)
            if error is not None:
                return f".hooks[{index}].env", error
    for index, mount in enumerate(edits.mounts):
        if not mount.host_path:
            return f".mounts[{index}].hostPath", "invalid mount: empty hostPath"
        container_path = mount.container_path
        if not container_path or container_path[0] != "/":
            return (
                f".mounts[{index}].containerPath",
                f"invalid mount containerPath {quote(container_path)}: must be an absolute path",
            )
    rdt = edits.intel_rdt
    if rdt is not None and rdt.clos_id:
        clos_id = rdt.clos_id
        if (
            len(clos_id) >= _CLOS_ID_MAX
            or clos_id in (".", "..")
            or "/" in clos_id
            or ("\n" in clos_id)
        ):
            return (
                ".intelRdt.closID",
                f"invalid closID {quote(clos_id)}: must be shorter than {_CLOS_ID_MAX} "
                "characters, not '.' or '..', without '/' or newline",
            )
    return None
