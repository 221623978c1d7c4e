"""The plugin's configuration: a YAML file (optional) overlaid by command-line flags.

Every key is documented in docs/nri-plugin.md ("Configuration"). Unknown keys, wrong types and
bad values raise ConfigError naming the file, the key and the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import yaml

from cdi.errors import quote
from cdi.names import class_error, vendor_error
from cdi.registry import DEFAULT_SPEC_DIRS
from nri_plugin.policy import RUNTIME_CDI_CHOICES, Policy

MODES = ("auto", "resolve", "native")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_SOCKET = "/var/run/nri/nri.sock"
DEFAULT_PLUGIN_NAME = "gpu-cdi"
DEFAULT_PLUGIN_IDX = "10"
# NRI 0.12 restricts plugin names to these characters; older runtimes accept them too.
_PLUGIN_NAME = re.compile(r"[A-Za-z0-9_.+-]+\Z")
_PLUGIN_IDX = re.compile(r"[0-9]{2}\Z")


class ConfigError(ValueError):
    """The configuration is invalid; the message names where, which key and which value."""


@attrs.frozen
class Config:
    """Everything the plugin can be told (defaults: attach to containerd's default socket)."""

    socket: str = DEFAULT_SOCKET
    mode: str = "auto"
    spec_dirs: tuple[str, ...] = DEFAULT_SPEC_DIRS
    plugin_name: str = DEFAULT_PLUGIN_NAME
    plugin_idx: str = DEFAULT_PLUGIN_IDX
    env_kind: str = "nvidia.com/gpu"
    void_visible_devices: bool = True
    metrics_port: int = 0  # 0: no metrics endpoint
    metrics_address: str = "127.0.0.1"
    log_level: str = "info"
    reconnect_seconds: float = 2.0
    # containerd's config file as the plugin sees it (None: found from the runtime's process)
    containerd_config: str | None = None
    host_root: str = "/"  # where the host's / is mounted (a container's /host)
    policy: Policy = attrs.field(factory=Policy)


FLAGS_SOURCE = "command line"


def _where(source: str, key: str) -> str:
    if source == FLAGS_SOURCE:
        return f"{source}: --{key.replace('_', '-')}"
    return f"{source}: {key}"


def _string(source: str, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(
            f"{_where(source, key)}: expected a string, got {type(value).__name__} {value!r}"
        )
    return value


def _choice(source: str, key: str, value: object, choices: Sequence[str]) -> str:
    text = _string(source, key, value)
    if text not in choices:
        raise ConfigError(
            f"{_where(source, key)}: invalid value {quote(text)} (one of: {', '.join(choices)})"
        )
    return text


def _bool(source: str, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{_where(source, key)}: expected true or false, got {value!r}")
    return value


def _strings(source: str, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(
            f"{_where(source, key)}: expected a list of strings, got {type(value).__name__}"
        )
    return tuple(_string(source, f"{key}[{i}]", item) for i, item in enumerate(value))


def _optional_set(source: str, key: str, value: object) -> frozenset[str] | None:
    # null (or absent) means "no restriction"; an empty list means "nobody".
    if value is None:
        return None
    return frozenset(_strings(source, key, value))


def _kind(source: str, key: str, value: str) -> str:
    vendor, sep, cls = value.partition("/")
    error = None if sep else "expected vendor/class"
    error = error or vendor_error(vendor) or class_error(cls)
    if error is not None:
        raise ConfigError(f"{_where(source, key)}: invalid device kind {quote(value)}: {error}")
    return value


def _kinds(source: str, key: str, value: Sequence[str]) -> frozenset[str]:
    return frozenset(_kind(source, f"{key}[{i}]", kind) for i, kind in enumerate(value))


def _port(source: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{_where(source, key)}: expected a port number 0-65535, got {value!r}")
    return value


def _check_plugin(source: str, name: str, idx: str) -> None:
    if not _PLUGIN_NAME.match(name):
        raise ConfigError(
            f"{_where(source, 'plugin_name')}: invalid plugin name {quote(name)} "
            "(letters, digits, '-', '_', '.', '+')"
        )
    if not _PLUGIN_IDX.match(idx):
        raise ConfigError(
            f"{_where(source, 'plugin_idx')}: invalid plugin index {quote(idx)} "
            "(exactly two digits, 00-99)"
        )


_POLICY_KEYS = (
    "annotation_namespaces",
    "management_kinds",
    "management_namespaces",
    "allowed_kinds",
    "env_unprivileged",
    "runtime_cdi",
)


def _policy(source: str, data: object, base: Policy) -> Policy:
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(source, 'policy')}: expected a mapping")
    unknown = sorted(str(key) for key in set(data) - set(_POLICY_KEYS))
    if unknown:
        raise ConfigError(
            f"{_where(source, 'policy.' + str(unknown[0]))}: unknown key "
            f"(known: {', '.join(_POLICY_KEYS)})"
        )
    changes: dict[str, Any] = {}
    for key, value in data.items():
        where = f"policy.{key}"
        if key == "annotation_namespaces":
            changes[key] = _optional_set(source, where, value)
        elif key == "allowed_kinds":
            kinds = None if value is None else _strings(source, where, value)
            changes[key] = None if kinds is None else _kinds(source, where, kinds)
        elif key == "management_kinds":
            changes[key] = _kinds(source, where, _strings(source, where, value))
        elif key == "management_namespaces":
            changes[key] = frozenset(_strings(source, where, value))
        elif key == "env_unprivileged":
            changes[key] = _bool(source, where, value)
        else:
            changes[key] = _choice(source, where, value, RUNTIME_CDI_CHOICES)
    return attrs.evolve(base, **changes)


_TOP_KEYS = (
    "socket",
    "mode",
    "spec_dirs",
    "plugin_name",
    "plugin_idx",
    "env_kind",
    "void_visible_devices",
    "metrics_port",
    "metrics_address",
    "log_level",
    "reconnect_seconds",
    "containerd_config",
    "host_root",
    "policy",
)


def from_mapping(data: object, source: str, base: Config | None = None) -> Config:
    """A Config from parsed YAML (`source` names it in errors), over `base` or the defaults."""
    config = base or Config()
    if data is None:
        return config
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    unknown = sorted(str(k) for k in set(data) - set(_TOP_KEYS))
    if unknown:
        raise ConfigError(
            f"{_where(source, unknown[0])}: unknown key (known: {', '.join(_TOP_KEYS)})"
        )
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key == "mode":
            changes[key] = _choice(source, key, value, MODES)
        elif key == "log_level":
            changes[key] = _choice(source, key, value, LOG_LEVELS)
        elif key == "spec_dirs":
            dirs = _strings(source, key, value)
            if not dirs:
                raise ConfigError(f"{_where(source, key)}: needs at least one directory")
            changes[key] = dirs
        elif key == "void_visible_devices":
            changes[key] = _bool(source, key, value)
        elif key == "metrics_port":
            changes[key] = _port(source, key, value)
        elif key == "reconnect_seconds":
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{_where(source, key)}: expected a positive number of seconds")
            changes[key] = float(value)
        elif key == "host_root":
            root = _string(source, key, value)
            if not root.startswith("/"):
                raise ConfigError(f"{_where(source, key)}: {quote(root)} is not an absolute path")
            changes[key] = root
        elif key == "env_kind":
            changes[key] = _kind(source, key, _string(source, key, value))
        elif key == "policy":
            changes[key] = _policy(source, value, config.policy)
        else:
            changes[key] = _string(source, key, value)
    config = attrs.evolve(config, **changes)
    _check_plugin(source, config.plugin_name, config.plugin_idx)
    return config


def load_file(path: str, base: Config | None = None) -> Config:
    """Read a YAML config file; ConfigError for a missing, unreadable or invalid file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file: {error.strerror}") from None
    return from_text(text, path, base)


def from_text(text: str, source: str, base: Config | None = None) -> Config:
    """A Config from YAML text (a file's, or the runtime's drop-in config)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    return from_mapping(data, source, base)


def with_flags(config: Config, flags: Mapping[str, object]) -> Config:
    """`config` with the command-line flags that were given (None = not given) applied."""
    given = {key: value for key, value in flags.items() if value is not None}
    if not given:
        return config
    if "spec_dirs" in given:
        given["spec_dirs"] = list(given["spec_dirs"])  # type: ignore[call-overload]
    return from_mapping(given, FLAGS_SOURCE, config)
