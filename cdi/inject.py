"""Merge the edits of CDI devices and apply them to an OCI runtime spec (a JSON dict), as the
reference library 0.8.0's InjectDevices does.

Order of the merge: for each requested device, the spec-level edits of its spec (once per
spec, at its first device), then the device's own edits. Order of application: env, device
nodes (+ cgroup device rules), mounts (then the 0.8 sort), hooks, intelRdt, additionalGids.
Deliberate differences (docs/cdi-deviations.md): a device requested twice is merged once (no
duplicate hooks or cgroup rules), and the input OCI spec is never modified: the result is a
new dict that shares the parts it did not change, and on any error nothing was changed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import attrs

from cdi.errors import InjectionError, quote
from cdi.spec import HOOK_STAGES, ContainerEdits, DeviceNode, Hook, IntelRdt, Mount


class _Resolved(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def device(self) -> Any: ...
    @property
    def spec(self) -> Any: ...


class _Resolver(Protocol):
    def resolve(self, name: str) -> Any: ...


def merge_edits(resolved_devices: Iterable[_Resolved]) -> ContainerEdits:
    """The edits of the devices in request order, each spec's own edits first (once).

    A device listed twice is merged once (the reference appends it twice).
    """
    env: list[str] = []
    nodes: list[DeviceNode] = []
    hooks: list[Hook] = []
    mounts: list[Mount] = []
    gids: list[int] = []
    rdt: IntelRdt | None = None
    seen_specs: set[str] = set()
    seen_devices: set[str] = set()
    for resolved in resolved_devices:
        if resolved.name in seen_devices:
            continue
        seen_devices.add(resolved.name)
        parts: tuple[ContainerEdits, ...] = (resolved.device.container_edits,)
        if resolved.path not in seen_specs:
            seen_specs.add(resolved.path)
            parts = (resolved.spec.container_edits, *parts)
        for edits in parts:
            env += edits.env
            nodes += edits.device_nodes
            hooks += edits.hooks
            mounts += edits.mounts
            gids += edits.additional_gids
            if edits.intel_rdt is not None:
                rdt = edits.intel_rdt
    return ContainerEdits(env, nodes, hooks, mounts, rdt, gids)


def resolve_all(names: Sequence[str], registry: _Resolver) -> list[Any]:
    """Resolve every name; InjectionError listing all unresolvable names (request order)."""
    resolved = []
    missing = []
    for name in names:
        device = registry.resolve(name)
        if device is None:
            missing.append(name)
        else:
            resolved.append(device)
    if missing:
        raise InjectionError(f"unresolvable CDI devices {', '.join(missing)}", tuple(missing))
    return resolved


def inject_devices(
    oci_spec: dict[str, Any], names: Sequence[str], registry: _Resolver
) -> dict[str, Any]:
    """A copy of `oci_spec` with the CDI devices `names` injected (the input is not changed)."""
    if oci_spec is None:
        raise InjectionError("can't inject devices, nil OCI Spec")
    return apply_edits(oci_spec, merge_edits(resolve_all(names, registry)))


def _host_device(path: str, root: str = "/") -> tuple[str, int, int]:
    where = path
    if root != "/":
        # The node's / is mounted at `root` here: its /dev is read there, symlinks inside it.
        from cdi.nvidia.rootpath import entry

        where = entry(root, path) or root.rstrip("/") + path
    try:
        info = os.lstat(where)
    except OSError as error:
        seen = "" if where == path else f" (at {where})"
        raise InjectionError(
            f"failed to inject devices: failed to stat CDI host device {quote(path)}{seen}: "
            f"{error.strerror or error}"
        ) from None
    mode = info.st_mode
    if stat.S_ISBLK(mode):
        kind = "b"
    elif stat.S_ISCHR(mode):
        kind = "c"
    elif stat.S_ISFIFO(mode):
        kind = "p"
    else:
        raise InjectionError(
            f"failed to inject devices: failed to stat CDI host device {quote(path)}: "
            "not a device node (symlinks are not followed)"
        )
    return kind, os.major(info.st_rdev), os.minor(info.st_rdev)


def fill_device_node(node: DeviceNode, root: str = "/") -> DeviceNode:
    """The node with host path, type and major/minor filled from the host where the spec
    leaves them out (0.8 rules: a node with a type and a major, or a FIFO, is not looked up).
    `root` is where the host's / is in this filesystem (`/host` in a container).
    """
    host_path = node.host_path or node.path
    kind = node.type or ""
    major = node.major or 0
    if kind and (major != 0 or kind == "p"):
        return node  # fully specified: no host lookup (the host path is not part of the result)
    host_kind, host_major, host_minor = _host_device(host_path, root)
    if not kind:
        kind = host_kind
    elif kind != host_kind:
        raise InjectionError(
            f"failed to inject devices: CDI device ({quote(node.path)}, {quote(host_path)}), "
            f"host type mismatch ({kind}, {host_kind})"
        )
    if major == 0 and kind != "p":
        return attrs.evolve(
            node, host_path=host_path, type=kind, major=host_major, minor=host_minor
        )
    return attrs.evolve(node, host_path=host_path, type=kind)


def _oci_device(node: DeviceNode, uid: int, gid: int) -> dict[str, Any]:
    device: dict[str, Any] = {
        "path": node.path,
        "type": node.type,
        "major": node.major or 0,
        "minor": node.minor or 0,
    }
    if node.file_mode is not None:
        device["fileMode"] = node.file_mode
    if node.uid is not None:
        device["uid"] = node.uid
    elif uid > 0:
        device["uid"] = uid
    if node.gid is not None:
        device["gid"] = node.gid
    elif gid > 0:
        device["gid"] = gid
    return device


def _oci_hook(hook: Hook) -> dict[str, Any]:
    oci: dict[str, Any] = {"path": hook.path}
    if hook.args:
        oci["args"] = list(hook.args)
    if hook.env:
        oci["env"] = list(hook.env)
    if hook.timeout is not None:
        oci["timeout"] = hook.timeout
    return oci


def _oci_rdt(rdt: IntelRdt) -> dict[str, Any]:
    oci: dict[str, Any] = {}
    if rdt.clos_id:
        oci["closID"] = rdt.clos_id
    if rdt.l3_cache_schema:
        oci["l3CacheSchema"] = rdt.l3_cache_schema
    if rdt.mem_bw_schema:
        oci["memBwSchema"] = rdt.mem_bw_schema
    if rdt.enable_cmt:
        oci["enableCMT"] = True
    if rdt.enable_mbm:
        oci["enableMBM"] = True
    return oci


def clean_path(path: str) -> str:
    """Go's filepath.Clean (os.path.normpath keeps a leading `//`; Go does not)."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(part)
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def mount_order(destination: str) -> tuple[int, str]:
    """The sort key of OCI mounts after an injection: the depth of the cleaned destination,
    then the destination (`apply_edits` here; NRI's `runtime-tools/generate` sorts a
    container's mounts the same way when it applies an adjustment)."""
    if destination.startswith("/") and "//" not in destination and "/." not in destination:
        # Already clean (the common case): skip the Python-level Clean.
        depth = destination.count("/") - (len(destination) > 1 and destination.endswith("/"))
        return depth, destination
    return clean_path(destination).count("/"), destination


def apply_edits(oci_spec: dict[str, Any], edits: ContainerEdits) -> dict[str, Any]:
    """A new OCI spec dict with `edits` applied in the reference's order and way."""
    # Host lookups first: they are the only step that can fail, and nothing is touched yet.
    nodes = [fill_device_node(node) for node in edits.device_nodes]
    spec = dict(oci_spec)
    process: dict[str, Any] | None = spec.get("process")

    if edits.env:
        process = spec["process"] = dict(process or {})
        env = list(process.get("env") or ())
        # runtime-tools indexes the existing entries by their whole `NAME=value` text and the
        # added ones by name: CDI values replace earlier CDI values (and a pre-existing bare
        # `NAME`) in place, but never a pre-existing `NAME=value`.
        added: dict[str, int] = {var: index for index, var in enumerate(env)}
        for var in edits.env:
            name = var.split("=", 1)[0]
            index = added.get(name)
            if index is None:
                added[name] = len(env)
                env.append(var)
            else:
                env[index] = var
        process["env"] = env

    if nodes:
        user = (process or {}).get("user") or {}
        uid = user.get("uid", 0) if process is not None else 0
        gid = user.get("gid", 0) if process is not None else 0
        linux = spec["linux"] = dict(spec.get("linux") or {})
        devices = list(linux.get("devices") or ())
        present = {existing.get("path") for existing in devices}
        rules = None
        for node in nodes:
            oci = _oci_device(node, uid, gid)
            path = node.path
            if path in present:
                # runtime-tools: RemoveDevice drops the first entry with this path, then
                # AddDevice replaces the next one in place or appends.
                for index, existing in enumerate(devices):
                    if existing.get("path") == path:
                        del devices[index]
                        break
                for index, existing in enumerate(devices):
                    if existing.get("path") == path:
                        devices[index] = oci
                        break
                else:
                    devices.append(oci)
            else:
                present.add(path)
                devices.append(oci)
            if node.type in ("b", "c"):
                if rules is None:
                    resources = linux["resources"] = dict(linux.get("resources") or {})
                    rules = resources["devices"] = list(resources.get("devices") or ())
                rules.append(
                    {
                        "allow": True,
                        "type": node.type,
                        "major": node.major,
                        "minor": node.minor or 0,
                        "access": node.permissions or "rwm",
                    }
                )
        linux["devices"] = devices

    if edits.mounts:
        mounts = list(spec.get("mounts") or ())
        for mount in edits.mounts:
            destination = mount.container_path
            for index, existing in enumerate(mounts):
                if existing.get("destination") == destination:
                    del mounts[index]
                    break
            oci_mount: dict[str, Any] = {"destination": destination}
            if mount.type:
                oci_mount["type"] = mount.type
            if mount.host_path:
                oci_mount["source"] = mount.host_path
            if mount.options:
                oci_mount["options"] = list(mount.options)
            mounts.append(oci_mount)
        mounts.sort(key=lambda mount: mount_order(mount.get("destination", "")))
        spec["mounts"] = mounts

    if edits.hooks:
        hooks = spec["hooks"] = dict(spec.get("hooks") or {})
        copied: set[str] = set()
        for hook in edits.hooks:
            stage = hook.hook_name
            if stage not in HOOK_STAGES:
                raise InjectionError(
                    f"failed to inject devices: unknown hook name {hook.hook_name!r}"
                )
            if stage not in copied:
                copied.add(stage)
                hooks[stage] = list(hooks.get(stage) or ())
            hooks[stage].append(_oci_hook(hook))

    if edits.intel_rdt is not None:
        linux = spec["linux"] = dict(spec.get("linux") or {})
        linux["intelRdt"] = _oci_rdt(edits.intel_rdt)

    gids = [gid for gid in edits.additional_gids if gid != 0]
    if gids:
        process = spec["process"] = dict(spec.get("process") or {})
        user = process["user"] = dict(process.get("user") or {})
        groups = list(user.get("additionalGids") or ())
        for gid in gids:
            if gid not in groups:
                groups.append(gid)
        user["additionalGids"] = groups
    return spec
