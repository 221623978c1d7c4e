"""Merged CDI container edits -> an NRI ContainerAdjustment (resolve mode), or CDI names in the
adjustment's CDI_devices field (native mode).

containerd applies an adjustment like this (NRI 0.6.1 `runtime-tools/generate`): env entries
replace a same-named variable in place or are appended; a device replaces one with the same
path and gets an allow rule (access `rw`, `rwm` for block devices); a mount replaces one with
the same destination and all mounts are re-sorted by depth, then destination (sort.Sort); hooks
are appended to their stage. The mounts are sent in that order already: the sort then finds
them in place (half the comparisons of a shuffled list, docs/nri-plugin.md), and since
destinations are unique the container's mounts come out the same whatever the order sent.
So the adjustment carries each env name, device path and mount destination once (the last
definition, where the reference library's injection would leave it), and each distinct hook
once: a device requested twice, or `all` next to one of its GPUs, does not double hooks or
device rules (docs/nri-plugin.md, "Deviations").

Not expressible in any NRI adjustment, and left out: `additionalGids` (no field for the
process's groups) and `intelRdt` (NRI has only a class name). Native mode has neither gap:
the runtime applies the whole spec itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from cdi.inject import fill_device_node, mount_order
from cdi.spec import ContainerEdits, DeviceNode, Hook, Mount
from nri_plugin.protocol import api

# CDI hookName -> field of api.Hooks
HOOK_FIELDS = {
    "prestart": "prestart",
    "createRuntime": "create_runtime",
    "createContainer": "create_container",
    "startContainer": "start_container",
    "poststart": "poststart",
    "poststop": "poststop",
}


class AdjustError(ValueError):
    """The edits cannot be turned into an adjustment (e.g. an unknown hook stage)."""


def _env_pairs(env: Iterable[str], extra: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    # A later value for the same name replaces the earlier one in its first position, as
    # the reference does for CDI env entries.
    merged: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        merged[key] = value
    for key, value in extra:
        merged[key] = value
    return list(merged.items())


T = TypeVar("T")


def _last_by(items: Iterable[tuple[str, T]]) -> list[T]:
    """The values, one per key: the last one, at the position of the last one."""
    chosen: dict[str, T] = {}
    for key, item in items:
        chosen.pop(key, None)
        chosen[key] = item
    return list(chosen.values())


def _device(node: DeviceNode) -> api.LinuxDevice:
    device = api.LinuxDevice(
        path=node.path, type=node.type or "", major=node.major or 0, minor=node.minor or 0
    )
    if node.file_mode is not None:
        device.file_mode.value = node.file_mode
    if node.uid is not None:
        device.uid.value = node.uid
    if node.gid is not None:
        device.gid.value = node.gid
    return device


def _mount(mount: Mount) -> api.Mount:
    return api.Mount(
        destination=mount.container_path,
        type=mount.type or "",
        source=mount.host_path,
        options=mount.options,
    )


def _hook(hook: Hook) -> api.Hook:
    nri = api.Hook(path=hook.path, args=hook.args, env=hook.env)
    if hook.timeout is not None:
        nri.timeout.value = hook.timeout
    return nri


def resolved_adjustment(
    edits: ContainerEdits, extra_env: Sequence[tuple[str, str]] = (), host_root: str = "/"
) -> api.ContainerAdjustment:
    """The adjustment that applies `edits` (plus `extra_env`, which wins over the edits' env).

    Device nodes without type or major/minor are completed from the host (`cdi.inject` rules),
    read under `host_root` (where the host's / is mounted); that can raise
    cdi.errors.InjectionError.
    """
    adjust = api.ContainerAdjustment()
    for key, value in _env_pairs(edits.env, extra_env):
        adjust.env.add(key=key, value=value)
    nodes = [fill_device_node(node, host_root) for node in edits.device_nodes]
    for node in _last_by((node.path, node) for node in nodes):
        adjust.linux.devices.append(_device(node))
    mounts = _last_by((m.container_path, m) for m in edits.mounts)
    for mount in sorted(mounts, key=lambda m: mount_order(m.container_path)):
        adjust.mounts.append(_mount(mount))
    seen: set[Hook] = set()
    for hook in edits.hooks:
        if hook in seen:
            continue
        seen.add(hook)
        field = HOOK_FIELDS.get(hook.hook_name)
        if field is None:
            raise AdjustError(
                f"hook {hook.path!r} has the unknown hookName {hook.hook_name!r} "
                f"(known: {', '.join(HOOK_FIELDS)})"
            )
        getattr(adjust.hooks, field).append(_hook(hook))
    return adjust


def native_adjustment(
    names: Iterable[str], extra_env: Sequence[tuple[str, str]] = ()
) -> api.ContainerAdjustment:
    """The adjustment that asks the runtime to inject the CDI devices `names` itself."""
    adjust = api.ContainerAdjustment()
    for name in names:
        adjust.CDI_devices.add(name=name)
    for key, value in extra_env:
        adjust.env.add(key=key, value=value)
    return adjust
