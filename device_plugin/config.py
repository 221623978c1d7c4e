"""The plugin's settings: one table, read from flags, environment variables and a config file.

Each setting is declared once, as a field of `Settings` whose metadata names its flag, its
environment variable and its key in the config file, all as NVIDIA's k8s-device-plugin names
them where the meaning is the same. Precedence: flag, then environment, then config file, then
the default. The config file is NVIDIA's format (`version: v1`, `flags:`, `sharing:`); unknown
keys, wrong types and bad values raise ConfigError naming the source, the key and the value.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from cdi.errors import quote
from cdi.names import ANNOTATION_PREFIX, class_error, vendor_error

MIG_STRATEGIES = ("none", "single", "mixed")
DEVICE_LIST_STRATEGIES = ("envvar", "volume-mounts", "cdi-annotations", "cdi-cri")
DEVICE_ID_STRATEGIES = ("uuid", "index")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_KUBELET_SOCKET = "/var/lib/kubelet/device-plugins/kubelet.sock"
CONFIG_VERSION = "v1"


class ConfigError(ValueError):
    """A setting is invalid; the message names where it came from, the key and the value."""


# ------------------------------------------------------------------------------- value types


def _text(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
    return value


def _bool(where: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no", ""):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def _strings(where: str, value: object) -> tuple[str, ...]:
    # A list, or one comma-separated string (flags repeat, env vars and NVIDIA's config join).
    items = value if isinstance(value, list | tuple) else [value]
    out: list[str] = []
    for item in items:
        out += [part.strip() for part in _text(where, item).split(",") if part.strip()]
    return tuple(out)


def _path(where: str, value: object) -> str:
    text = _text(where, value)
    if text and not text.startswith("/"):
        raise ConfigError(f"{where}: {quote(text)} is not an absolute path")
    return os.path.normpath(text) if text else text


def _optional_path(where: str, value: object) -> str | None:
    return _path(where, value) or None


def _optional_file(where: str, value: object) -> str | None:
    return _text(where, value) or None


def _paths(where: str, value: object) -> tuple[str, ...]:
    return tuple(_path(where, item) for item in _strings(where, value))


_CONVERTERS: dict[str, Callable[[str, object], Any]] = {
    "text": _text,
    "bool": _bool,
    "strings": _strings,
    "path": _path,
    "optional_path": _optional_path,
    "optional_file": _optional_file,
    "paths": _paths,
}


def setting(
    default: Any,
    *,
    flag: str,
    help: str = "",
    kind: str = "text",
    env: str = "",
    key: str = "",
    choices: Sequence[str] = (),
    metavar: str = "",
    shared: bool = False,
    dest: str = "",
) -> Any:
    """A Settings field: its flag, env var, config key (dotted), type and help. `shared`: the
    flag is one of gpu-cdi generate's discovery flags, declared there (`dest` its argparse
    name when it differs from the field's)."""
    return attrs.field(
        default=default,
        metadata={
            "flag": flag,
            "env": env,
            "key": key,
            "kind": kind,
            "choices": tuple(choices),
            "help": help,
            "metavar": metavar,
            "shared": shared,
            "dest": dest,
        },
    )


# ---------------------------------------------------------------------------- time-slicing


@attrs.frozen
class SharedResource:
    """One entry of `sharing.timeSlicing.resources`: advertise each device `replicas` times."""

    name: str
    replicas: int
    rename: str = ""


@attrs.frozen
class TimeSlicing:
    """`sharing.timeSlicing` of NVIDIA's config file."""

    resources: tuple[SharedResource, ...] = ()
    rename_by_default: bool = False
    fail_requests_greater_than_one: bool = False

    def for_resource(self, name: str) -> SharedResource | None:
        """The sharing entry of resource `name`, if it is shared."""
        return next((r for r in self.resources if r.name == name), None)


# -------------------------------------------------------------------------------- settings


@attrs.frozen
class Settings:
    """Everything gpu-cdi-device-plugin can be told."""

    mig_strategy: str = setting(
        "none",
        flag="--mig-strategy",
        env="MIG_STRATEGY",
        key="flags.migStrategy",
        choices=MIG_STRATEGIES,
        help="how MIG devices are offered: none (MIG-enabled GPUs are not), single (as "
        "nvidia.com/gpu), mixed (nvidia.com/mig-<profile>) (default none)",
    )
    fail_on_init_error: bool = setting(
        True,
        flag="--fail-on-init-error",
        env="FAIL_ON_INIT_ERROR",
        key="flags.failOnInitError",
        kind="bool",
        help="exit when there is no driver or NVML fails; false: wait and retry (default true)",
    )
    # Where the node is: gpu-cdi generate's flags (cdi.nvidia.commands.add_discovery_flags
    # declares them and their help), with NVIDIA's environment variables and config keys.
    driver_root: str = setting(
        "/",
        flag="--driver-root",
        env="NVIDIA_DRIVER_ROOT",
        key="flags.nvidiaDriverRoot",
        kind="path",
        shared=True,
    )
    dev_root: str | None = setting(
        None,
        flag="--dev-root",
        env="NVIDIA_DEV_ROOT",
        key="flags.nvidiaDevRoot",
        kind="optional_path",
        shared=True,
    )
    host_root: str = setting("/", flag="--host-root", kind="path", shared=True)
    proc_sys_root: str = setting("/", flag="--proc-sys-root", kind="path", shared=True)
    library_search_paths: tuple[str, ...] = setting(
        (), flag="--library-search-path", kind="paths", shared=True, dest="library_search_path"
    )
    inventory: str | None = setting(None, flag="--inventory", kind="optional_file", shared=True)
    device_list_strategy: tuple[str, ...] = setting(
        ("envvar",),
        flag="--device-list-strategy",
        env="DEVICE_LIST_STRATEGY",
        key="flags.plugin.deviceListStrategy",
        kind="strings",
        choices=DEVICE_LIST_STRATEGIES,
        metavar="S",
        help="how Allocate hands out devices: envvar (NVIDIA_VISIBLE_DEVICES, for gpu-cdi-nri), "
        "cdi-annotations, cdi-cri (CDIDevices); repeatable (default envvar)",
    )
    device_id_strategy: str = setting(
        "uuid",
        flag="--device-id-strategy",
        env="DEVICE_ID_STRATEGY",
        key="flags.plugin.deviceIDStrategy",
        choices=DEVICE_ID_STRATEGIES,
        help="device IDs kubelet sees: uuid or index (default uuid)",
    )
    pass_device_specs: bool = setting(
        False,
        flag="--pass-device-specs",
        env="PASS_DEVICE_SPECS",
        key="flags.plugin.passDeviceSpecs",
        kind="bool",
        help="also return the device nodes in Allocate (for runtimes without CDI)",
    )
    cdi_annotation_prefix: str = setting(
        ANNOTATION_PREFIX,
        flag="--cdi-annotation-prefix",
        env="CDI_ANNOTATION_PREFIX",
        key="flags.plugin.cdiAnnotationPrefix",
        help=f"key prefix of the cdi-annotations strategy (default {ANNOTATION_PREFIX})",
    )
    cdi_vendor: str = setting(
        "nvidia.com",
        flag="--cdi-vendor",
        env="CDI_VENDOR",
        key="flags.plugin.cdiVendor",
        help="vendor of the CDI kind the names refer to (default nvidia.com, as gpu-cdi generate)",
    )
    cdi_class: str = setting(
        "gpu",
        flag="--cdi-class",
        env="CDI_CLASS",
        key="flags.plugin.cdiClass",
        help="class of the CDI kind (default gpu)",
    )
    kubelet_socket: str = setting(
        DEFAULT_KUBELET_SOCKET,
        flag="--kubelet-socket",
        env="KUBELET_SOCKET",
        key="flags.plugin.kubeletSocket",
        kind="path",
        metavar="PATH",
        help="kubelet's registration socket; the plugin's sockets go beside it; empty: serve "
        f"without registering (default {DEFAULT_KUBELET_SOCKET})",
    )
    hook_path: str = setting(
        "",
        flag="--nvidia-cdi-hook-path",
        env="NVIDIA_CDI_HOOK_PATH",
        key="flags.plugin.nvidiaCDIHookPath",
        metavar="PATH",
        help="hook program in a spec the plugin writes (default: as gpu-cdi generate picks "
        "it; see gpu-cdi install-hook)",
    )
    cdi_spec_file: str | None = setting(
        None,
        flag="--cdi-spec-file",
        env="CDI_SPEC_FILE",
        key="flags.plugin.cdiSpecFile",
        kind="optional_file",
        metavar="FILE",
        help="also write the CDI spec for this host there, at start and after a change (as "
        "gpu-cdi generate --output FILE would)",
    )
    nfd_features_file: str | None = setting(
        None,
        flag="--nfd-features-file",
        env="NFD_FEATURES_FILE",
        key="flags.plugin.nfdFeaturesFile",
        kind="optional_file",
        metavar="FILE",
        help="write node labels for node-feature-discovery there (a file in its features.d)",
    )
    log_level: str = setting(
        "info", flag="--log-level", env="LOG_LEVEL", choices=LOG_LEVELS, help="(default info)"
    )
    config_file: str | None = setting(
        None,
        flag="--config-file",
        env="CONFIG_FILE",
        kind="optional_file",
        metavar="FILE",
        help="NVIDIA-style config file (version v1: flags, sharing.timeSlicing)",
    )
    time_slicing: TimeSlicing = attrs.field(factory=TimeSlicing)

    @property
    def kind(self) -> str:
        """The CDI kind of the names handed out, `vendor/class`."""
        return f"{self.cdi_vendor}/{self.cdi_class}"

    @property
    def roots(self) -> Any:
        """Where the node is, as discovery takes it (`cdi.nvidia.roots.Roots`)."""
        from cdi.nvidia.roots import Roots

        return Roots(
            driver_root=self.driver_root,
            dev_root=self.dev_root or self.driver_root,
            host_root=self.host_root,
            proc_sys_root=self.proc_sys_root,
            library_search_paths=self.library_search_paths,
        )


FIELDS = tuple(f for f in attrs.fields(Settings) if "flag" in f.metadata)


# ----------------------------------------------------------------------------- the sources


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The command-line parser; every setting's flag, with no defaults (unset stays None)."""
    from cdi.nvidia.commands import add_discovery_flags
    from cdi.release import VersionAction

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action=VersionAction)
    add_discovery_flags(parser)
    by_flag = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    for field in FIELDS:
        meta = field.metadata
        extra = f" [env {meta['env']}]" if meta["env"] else ""
        if meta["shared"]:
            by_flag[meta["flag"]].help = (by_flag[meta["flag"]].help or "") + extra
            continue
        kw: dict[str, Any] = {"dest": field.name, "default": None, "help": meta["help"] + extra}
        if meta["kind"] in ("strings", "paths"):
            kw["action"] = "append"
        if meta["metavar"]:
            kw["metavar"] = meta["metavar"]
        elif meta["choices"]:
            kw["metavar"] = "|".join(meta["choices"])
        if meta["kind"] == "bool":
            # `--flag` alone means true, as Go's flag package has it; `--flag=false` works too.
            kw.update(nargs="?", const="true", metavar="BOOL")
        parser.add_argument(meta["flag"], **kw)
    parser.add_argument(
        "--list",
        action="store_true",
        help="print the resources and devices this node would advertise, then exit",
    )
    return parser


def _convert(field: attrs.Attribute[Any], where: str, value: object) -> Any:
    converted = _CONVERTERS[field.metadata["kind"]](where, value)
    choices = field.metadata["choices"]
    if choices:
        values = converted if isinstance(converted, tuple) else (converted,)
        for item in values:
            if item not in choices:
                raise ConfigError(
                    f"{where}: invalid value {quote(item)} (one of: {', '.join(choices)})"
                )
    return converted


def from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line."""
    out = {}
    for f in FIELDS:
        value = getattr(args, f.metadata["dest"] or f.name, None)
        if value is not None and value != []:  # unset (an appending flag: empty)
            out[f.name] = _convert(f, f"command line: {f.metadata['flag']}", value)
    return out


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given as environment variables."""
    return {
        f.name: _convert(f, f"environment: {f.metadata['env']}", environ[f.metadata["env"]])
        for f in FIELDS
        if f.metadata["env"] and f.metadata["env"] in environ
    }


def _mapping(where: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    return value


def _walk(data: Mapping[str, Any], prefix: str, source: str, known: set[str]) -> dict[str, Any]:
    """{dotted key: value} of the leaves; ConfigError for a key no setting has."""
    found: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and any(k.startswith(dotted + ".") for k in known):
            found.update(_walk(value, dotted + ".", source, known))
        elif dotted in known:
            found[dotted] = value
        else:
            raise ConfigError(f"{source}: unknown key {quote(dotted)}")
    return found


def _int(where: str, value: object) -> int:
    if type(value) is not int:
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return value


def _time_slicing(source: str, value: object) -> TimeSlicing:
    where = f"{source}: sharing.timeSlicing"
    data = dict(_mapping(where, value))
    rename = _bool(f"{where}.renameByDefault", data.pop("renameByDefault", False))
    fail = _bool(
        f"{where}.failRequestsGreaterThanOne", data.pop("failRequestsGreaterThanOne", False)
    )
    items = data.pop("resources", [])
    if data:
        raise ConfigError(f"{where}: unknown key {quote(next(iter(data)))}")
    if not isinstance(items, list):
        raise ConfigError(f"{where}.resources: expected a list, got {items!r}")
    resources: list[SharedResource] = []
    for i, item in enumerate(items):
        at = f"{where}.resources[{i}]"
        entry = dict(_mapping(at, item))
        name = _text(f"{at}.name", entry.pop("name", None))
        replicas = _int(f"{at}.replicas", entry.pop("replicas", None))
        new_name = _text(f"{at}.rename", entry.pop("rename", ""))
        if "devices" in entry:
            raise ConfigError(
                f"{at}.devices: not supported: every device of {quote(name)} is shared"
            )
        if entry:
            raise ConfigError(f"{at}: unknown key {quote(next(iter(entry)))}")
        if replicas < 2:
            raise ConfigError(f"{at}.replicas: {replicas}: at least 2 makes sharing")
        if any(r.name == name for r in resources):
            raise ConfigError(f"{at}.name: {quote(name)} is shared twice")
        resources.append(SharedResource(name, replicas, new_name))
    return TimeSlicing(tuple(resources), rename, fail)


def from_file(path: str) -> dict[str, Any]:
    """The settings of a config file (NVIDIA's v1 format)."""
    import yaml

    from cdi.files import read_regular_file

    try:
        data = yaml.safe_load(read_regular_file(path).decode())  # a FIFO would block open()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file: {error.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{path}: not a YAML config file: {first}") from None
    top = dict(_mapping(path, data if data is not None else {}))
    version = top.pop("version", CONFIG_VERSION)
    if version != CONFIG_VERSION:
        raise ConfigError(f"{path}: version: {version!r} is not supported (only v1)")
    out: dict[str, Any] = {}
    sharing = dict(_mapping(f"{path}: sharing", top.pop("sharing", {}) or {}))
    if "timeSlicing" in sharing:
        out["time_slicing"] = _time_slicing(path, sharing.pop("timeSlicing"))
    if sharing:
        raise ConfigError(f"{path}: unknown key {quote('sharing.' + next(iter(sharing)))}")
    if "resources" in top:
        raise ConfigError(
            f"{path}: resources: renaming resources is not supported (names are "
            "nvidia.com/gpu and nvidia.com/mig-<profile>; rename shared ones with "
            "sharing.timeSlicing)"
        )
    by_key = {f.metadata["key"]: f for f in FIELDS if f.metadata["key"]}
    for key, value in _walk(top, "", path, set(by_key)).items():
        field = by_key[key]
        out[field.name] = _convert(field, f"{path}: {key}", value)
    return out


def _check(settings: Settings) -> Settings:
    for error in (vendor_error(settings.cdi_vendor), class_error(settings.cdi_class)):
        if error:
            raise ConfigError(f"CDI kind {quote(settings.kind)}: {error}")
    prefix = settings.cdi_annotation_prefix
    if not prefix.endswith("/") or prefix.count("/") != 1 or vendor_error(prefix[:-1]):
        raise ConfigError(
            f"cdi-annotation-prefix {quote(prefix)}: expected a domain and '/', "
            f"like {ANNOTATION_PREFIX}"
        )
    if "volume-mounts" in settings.device_list_strategy:
        raise ConfigError(
            "device-list-strategy volume-mounts: needs NVIDIA's container runtime, which gpu-cdi "
            "replaces; use envvar (with gpu-cdi-nri), cdi-annotations or cdi-cri"
        )
    if not settings.device_list_strategy:
        raise ConfigError("device-list-strategy: at least one strategy is needed")
    mount = settings.host_root != "/" or settings.proc_sys_root != "/"
    if settings.inventory and (mount or settings.library_search_paths):
        raise ConfigError(
            "--inventory conflicts with --host-root, --proc-sys-root and "
            "--library-search-path: a saved inventory is not discovered again"
        )
    return settings


def load(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """The settings: flags over environment over config file over defaults."""
    flags = from_flags(args)
    env = from_env(environ)
    path = flags.get("config_file") or env.get("config_file")
    values = from_file(path) if path else {}
    values.update(env)
    values.update(flags)
    return _check(Settings(**values))
