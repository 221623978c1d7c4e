"""The plugin's configuration: a YAML file (optional) overlaid by command-line flags.

Every key is documented in docs/nri-plugin.md ("Configuration"). Unknown keys, wrong types and
bad values raise ConfigError naming the file, the key and the value.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from cdi.registry import DEFAULT_SPEC_DIRS, read_regular_file
from cdi.yaml11 import YamlError, load_yaml
from nri_plugin import settings as read
from nri_plugin.policy import Policy
from nri_plugin.protocol.registration import DEFAULT_SOCKET, idx_error, name_error
from nri_plugin.settings import FLAGS_SOURCE, ConfigError, setting

__all__ = ["LOG_LEVELS", "MODES", "Config", "ConfigError", "from_mapping", "from_text", "parse"]

MODES = ("auto", "resolve", "native")
LOG_LEVELS = ("debug", "info", "warning", "error")


@attrs.frozen
class Config:
    """Everything the plugin can be told (defaults: attach to containerd's default socket).

    Each field is a key of the config file (and of a flag where cli.py has one)."""

    socket: str = setting(DEFAULT_SOCKET, read.nonempty)
    mode: str = setting("auto", read.choice(MODES))
    spec_dirs: tuple[str, ...] = setting(DEFAULT_SPEC_DIRS, read.nonempty_strings("directory"))
    plugin_name: str = setting("gpu-cdi", read.checked(read.string, name_error, "plugin name"))
    plugin_idx: str = setting("10", read.checked(read.string, idx_error, "plugin index"))
    env_kind: str = setting("nvidia.com/gpu", read.device_kind)
    void_visible_devices: bool = setting(True, read.boolean)
    metrics_port: int = setting(0, read.port)  # 0: no metrics endpoint
    metrics_address: str = setting("127.0.0.1", read.nonempty)
    log_level: str = setting("info", read.choice(LOG_LEVELS))
    reconnect_seconds: float = setting(2.0, read.seconds)
    # containerd's config file as the plugin sees it (None: found from the runtime's process)
    containerd_config: str | None = setting(None, read.optional(read.nonempty))
    host_root: str = setting("/", read.absolute_path)  # where the host's / is (a container's /host)
    policy: Policy = attrs.field(factory=Policy)  # a section: `policy:` in the file


def from_mapping(data: object, source: str, base: Config | None = None) -> Config:
    """A Config from parsed YAML (`source` names it in errors), over `base` or the defaults."""
    config = base or Config()
    if data is None:
        return config
    return read.read_section(Config, data, source, config)


def load_file(path: str, base: Config | None = None) -> Config:
    """Read a YAML config file; ConfigError for a missing, unreadable or invalid file."""
    try:
        data = read_regular_file(path)
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot read the config file: {error.strerror or error}"
        ) from None
    return from_text(data, path, base)


def parse(text: str | bytes, source: str) -> object:
    """The YAML document of `text`, read as strictly as a CDI spec (no duplicate keys, one
    document, any nesting depth); ConfigError naming `source` and the line."""
    try:
        return load_yaml(text)
    except YamlError as error:
        raise ConfigError(f"{source}: invalid YAML: {error}") from None


def from_text(text: str | bytes, source: str, base: Config | None = None) -> Config:
    """A Config from YAML text (a file's, or the runtime's drop-in config)."""
    return from_mapping(parse(text, source), source, base)


def with_flags(config: Config, flags: Mapping[str, object]) -> Config:
    """`config` with the command-line flags that were given (None = not given) applied."""
    given = {key: value for key, value in flags.items() if value is not None}
    if not given:
        return config
    if "spec_dirs" in given:
        given["spec_dirs"] = list(given["spec_dirs"])  # type: ignore[call-overload]
    return from_mapping(given, FLAGS_SOURCE, config)
