"""Compare CDI specs the way a container would see them.

Lists are sorted (their order changes nothing for a container) and hooks are reduced to their
effect: which links are made, which folders go into the ld cache, and so on. The hook program
and its argument spelling may differ (`nvidia-cdi-hook create-symlinks --link A` vs
`gpu-cdi-hook create-symlinks --link A`, `--flag=value` vs `--flag value`, one call per action vs
one chained call). What nvidia-ctk does and we deliberately do not is listed in KNOWN_DIFFERENCES.

Effects are those in a container given the device: gpu-cdi-hook's common hook carries every
GPU's DRM by-path links as `--link-if-target`, made only when the container has the target
node, where nvidia-ctk puts a `create-symlinks --link` hook in each device; and both skip a
chmod path the container lacks. So a device's hook effects are what the common hooks and its
own do in a container with the common and its own device nodes, minus what the common hooks do
in a container without it.
"""

from __future__ import annotations

import posixpath
from typing import Any

ACTIONS = (
    "create-symlinks",
    "update-ldcache",
    "enable-cuda-compat",
    "disable-device-node-modification",
    "update-application-profile",
    "chmod",
)
KNOWN_DIFFERENCES: frozenset[str] = frozenset()


def hook_effects(hooks: list[dict[str, Any]]) -> dict[str, Any]:
    """The combined effect of a list of hooks: action -> set of what it does."""
    effects: dict[str, set[Any]] = {}
    for hook in hooks:
        assert hook["hookName"] == "createContainer", hook
        args = list(hook.get("args", []))[1:]
        if args and args[0] == "hook":  # `nvidia-ctk hook <name>`
            args = args[1:]
        action = None
        i = 0
        while i < len(args):
            token = args[i]
            i += 1
            if token in ACTIONS:
                action = token
                effects.setdefault(action, set())
                continue
            assert action is not None, f"argument {token!r} before any action in {hook}"
            flag, eq, value = token.partition("=")
            takes_next = i < len(args) and not args[i].startswith("--") and args[i] not in ACTIONS
            if not eq and takes_next:
                value = args[i]
                i += 1
            effects[action].add((flag, value))
        for name in effects:
            if not effects[name]:
                effects[name].add(("", ""))
    return {k: v for k, v in effects.items() if k not in KNOWN_DIFFERENCES}


def _in_container(effects: dict[str, Any], nodes: set[str]) -> dict[str, set[Any]]:
    """Effects as they play out in a container with device `nodes`: conditional links made
    when their target is one of the nodes, chmod of paths that exist."""
    out: dict[str, set[Any]] = {}
    for action, items in effects.items():
        kept = set()
        for flag, value in items:
            if flag == "--link-if-target":
                target, _, link = value.partition("::")
                if posixpath.normpath(posixpath.join(posixpath.dirname(link), target)) in nodes:
                    kept.add(("--link", value))
            elif action == "chmod" and flag == "--path":
                if any(n == value or n.startswith(value.rstrip("/") + "/") for n in nodes):
                    kept.add((flag, value))
            else:
                kept.add((flag, value))
        if action == "chmod" and not any(flag == "--path" for flag, _ in kept):
            continue  # nothing left to chmod in this container
        if kept:
            out[action] = kept
    return out


def _node_paths(edits: dict[str, Any]) -> set[str]:
    return {node["path"] for node in edits.get("deviceNodes", [])}


def normalize_edits(edits: dict[str, Any], common: dict[str, Any] | None = None) -> dict[str, Any]:
    """Edits with lists sorted and hooks reduced to their effect in a container: the spec's own
    edits alone, or (`common` given) a device's, net of what the common edits do anyway."""
    out: dict[str, Any] = {}
    if edits.get("env"):
        out["env"] = sorted(edits["env"])
    if edits.get("deviceNodes"):
        out["deviceNodes"] = sorted(edits["deviceNodes"], key=lambda n: n["path"])
    if edits.get("mounts"):
        out["mounts"] = sorted(edits["mounts"], key=lambda m: m["containerPath"])
    if edits.get("additionalGids"):
        out["additionalGids"] = sorted(edits["additionalGids"])
    if common is None:
        effects = _in_container(hook_effects(edits.get("hooks", [])), _node_paths(edits))
    else:
        alone = _in_container(hook_effects(common.get("hooks", [])), _node_paths(common))
        hooks = common.get("hooks", []) + edits.get("hooks", [])
        both = _in_container(hook_effects(hooks), _node_paths(common) | _node_paths(edits))
        effects = {a: v - alone.get(a, set()) for a, v in both.items()}
        effects = {a: v for a, v in effects.items() if v}
    if effects:
        out["hooks"] = effects
    rest = set(edits) - {"env", "deviceNodes", "mounts", "additionalGids", "hooks"}
    for key in rest:
        out[key] = edits[key]
    return out


def normalize(spec: dict[str, Any]) -> dict[str, Any]:
    """A whole spec, normalized for comparison."""
    out = {k: v for k, v in spec.items() if k not in ("devices", "containerEdits")}
    common = spec.get("containerEdits", {})
    out["devices"] = {
        device["name"]: normalize_edits(device["containerEdits"], common)
        for device in spec["devices"]
    }
    out["containerEdits"] = normalize_edits(common)
    return out


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Readable list of what differs between two normalized specs (empty when equal)."""
    out: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                if key not in a:
                    out.append(f"{where}/{key}: missing in ours: {b[key]!r}")
                elif key not in b:
                    out.append(f"{where}/{key}: extra in ours: {a[key]!r}")
                else:
                    walk(a[key], b[key], f"{where}/{key}")
        elif isinstance(a, set) and isinstance(b, set):
            if a != b:
                out.append(f"{where}: ours lacks {sorted(b - a)}; ours adds {sorted(a - b)}")
        elif isinstance(a, list) and isinstance(b, list) and a != b:
            lacks = [item for item in b if item not in a]
            adds = [item for item in a if item not in b]
            out.append(f"{where}: ours lacks {lacks}; ours adds {adds}")
        elif a != b:
            out.append(f"{where}: ours {a!r} != theirs {b!r}")

    walk(ours, theirs, "")
    return out
