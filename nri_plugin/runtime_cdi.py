"""Whether the runtime will resolve the CDI names the plugin hands over, and the mode to use.

Native mode hands CDI names to the runtime (NRI's CDI_devices). containerd resolves them with
its own CDI cache: it must carry the field at all (its version), have CDI on (`enable_cdi`)
and read the specs the plugin checked the names against (`cdi_spec_dirs`). Otherwise every
GPU container fails ("unresolvable CDI devices") or silently gets nothing. So at Configure:

- `auto` picks native only when containerd's config says all three hold, else resolve, and
  says why;
- an explicit `native` on a runtime that evidently cannot resolve the names fails each request
  with one line naming the setting to change (`ModeChoice.refusal`);
- when containerd's own CDI is on while the policy restricts annotation requests, a warning:
  containerd injects `cdi.k8s.io/` container annotations itself, whatever the policy says.

containerd's config is found the way containerd finds it: `--config`/`-c` on its command line
(the runtime's pid comes from the NRI socket's peer credentials, or is our parent when it
launched us), else /etc/containerd/config.toml; read through /proc/<pid>/root so a plugin in
another mount namespace sees the runtime's file. `containerd_config` in the plugin's config
names the file explicitly. `imports` are followed as containerd does: 1.x replaces a whole
plugin table per imported file, 2.x merges them key by key.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from cdi.errors import quote
from nri_plugin.policy import Policy

# Version ranges [first, end) whose NRI adaptation hands CDI_devices to a CDI injector.
NATIVE_CDI_VERSIONS: Mapping[str, tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...]] = {
    "containerd": (((1, 7, 30), (2, 0, 0)), ((2, 1, 0), (999, 0, 0))),
}
DEFAULT_CONTAINERD_CONFIG = "/etc/containerd/config.toml"
# containerd's defaults for both release lines (pkg/cri/config)
DEFAULT_CDI_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
# The table holding enable_cdi / cdi_spec_dirs, by config file version.
CRI_RUNTIME_TABLE = {
    1: "cri",
    2: "io.containerd.grpc.v1.cri",
    3: "io.containerd.cri.v1.runtime",
}
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")
_MAX_CONFIG_BYTES = 4 << 20
_MAX_IMPORT_DEPTH = 8


def parse_runtime_version(version: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) from versions like `1.7.24~ds1` or `v2.1.0-rc.1`, else None."""
    match = _VERSION.match(version.strip())
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


class RuntimeConfigError(Exception):
    """containerd's config could not be read or understood; the message says where."""


@attrs.frozen
class ContainerdCdi:
    """containerd's CDI settings, and where each came from (for messages)."""

    enabled: bool
    spec_dirs: tuple[str, ...]
    enabled_from: str  # e.g. `enable_cdi = false in [plugins."…"] of /etc/containerd/config.toml`
    dirs_from: str

    def reads(self, spec_dirs: Iterable[str]) -> list[str]:
        """Those of `spec_dirs` containerd does not read (empty: it reads them all)."""
        theirs = {_canonical(d) for d in self.spec_dirs}
        return [d for d in spec_dirs if _canonical(d) not in theirs]


def _canonical(path: str) -> str:
    return os.path.realpath(os.path.normpath(path))


def _table_header(version: int) -> str:
    return f'[plugins."{CRI_RUNTIME_TABLE[version]}"]'


def _read_regular(path: str, shown: str | None = None) -> str | None:
    """A config file's text; None when it does not exist. Never blocks on a FIFO or device.

    `shown` names the file in errors (the path as containerd sees it).
    """
    shown = shown or path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise RuntimeConfigError(f"{shown}: cannot read: {error.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RuntimeConfigError(f"{shown}: not a regular file")
        data = f.read(_MAX_CONFIG_BYTES + 1)
    if len(data) > _MAX_CONFIG_BYTES:
        raise RuntimeConfigError(f"{shown}: larger than {_MAX_CONFIG_BYTES >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RuntimeConfigError(f"{shown}: not UTF-8 text (byte {error.start})") from None


@attrs.frozen
class _FileCdi:
    """What one config file says: its CRI runtime table (None: absent) and its version."""

    shown: str
    version: int
    table: Mapping[str, Any] | None
    imports: tuple[str, ...]


def _parse(text: str, shown: str, inherited_version: int) -> _FileCdi:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RuntimeConfigError(f"{shown}: not valid TOML: {error}") from None
    version = data.get("version", inherited_version)
    if version not in CRI_RUNTIME_TABLE:
        raise RuntimeConfigError(f"{shown}: unknown config version {version!r}")
    plugins = data.get("plugins", {})
    table = plugins.get(CRI_RUNTIME_TABLE[version]) if isinstance(plugins, dict) else None
    if table is not None and not isinstance(table, dict):
        raise RuntimeConfigError(f"{shown}: {_table_header(version)} is not a table")
    imports = data.get("imports", [])
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise RuntimeConfigError(f"{shown}: imports: expected a list of paths, got {imports!r}")
    return _FileCdi(shown, version, table, tuple(imports))


def read_containerd_cdi(path: str, major: int, root: str = "/") -> ContainerdCdi:
    """containerd's CDI settings from its config file `path` (as containerd sees it) and its
    imports, for a containerd of release line `major`, reading files under `root`.

    A missing main file means containerd's defaults. RuntimeConfigError for a file that cannot
    be read or parsed, or a setting of the wrong type.
    """
    files = _load(path, root)
    if not files:
        default = major >= 2
        version = 3 if major >= 2 else 2
        where = f"containerd {major}.x default, {path} does not exist"
        return ContainerdCdi(
            default,
            DEFAULT_CDI_SPEC_DIRS,
            f"enable_cdi = {_bool_text(default)} ({where}; set in {_table_header(version)})",
            f"cdi_spec_dirs ({where}; set in {_table_header(version)})",
        )
    # 1.x: an imported file's plugin table replaces the earlier one; 2.x merges key by key
    merged: dict[str, tuple[object, _FileCdi]] = {}
    for f in files:
        if f.table is None:
            continue
        if major < 2:
            merged = {}
        for key in ("enable_cdi", "cdi_spec_dirs"):
            if key in f.table:
                merged[key] = (f.table[key], f)
    main = files[0]
    enabled, enabled_file = merged.get("enable_cdi", (major >= 2, None))
    dirs, dirs_file = merged.get("cdi_spec_dirs", (list(DEFAULT_CDI_SPEC_DIRS), None))
    if not isinstance(enabled, bool):
        assert enabled_file is not None
        raise RuntimeConfigError(
            f"{enabled_file.shown}: {_table_header(enabled_file.version)} enable_cdi: "
            f"expected true or false, got {enabled!r}"
        )
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        assert dirs_file is not None
        raise RuntimeConfigError(
            f"{dirs_file.shown}: {_table_header(dirs_file.version)} cdi_spec_dirs: "
            f"expected a list of paths, got {dirs!r}"
        )
    return ContainerdCdi(
        enabled,
        tuple(dirs),
        _origin("enable_cdi", _bool_text(enabled), enabled_file, main, major),
        _origin("cdi_spec_dirs", "[" + ", ".join(map(quote, dirs)) + "]", dirs_file, main, major),
    )


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def _origin(key: str, value: str, source: _FileCdi | None, main: _FileCdi, major: int) -> str:
    if source is not None:
        return f"{key} = {value} in {_table_header(source.version)} of {source.shown}"
    return (
        f"{key} = {value} (containerd {major}.x default: not set in "
        f"{_table_header(main.version)} of {main.shown})"
    )


def _load(path: str, root: str) -> list[_FileCdi]:
    """The main file and its imports, in containerd's order (empty: no main file)."""
    out: list[_FileCdi] = []
    seen: set[str] = set()

    def visit(shown: str, depth: int, inherited: int) -> None:
        if shown in seen:
            return
        seen.add(shown)
        text = _read_regular(_under(root, shown), shown)
        if text is None:
            if out:  # containerd fails on a missing import; it cannot be running with one
                raise RuntimeConfigError(f"{shown}: imported by {out[0].shown} but missing")
            return
        parsed = _parse(text, shown, inherited)
        out.append(parsed)
        if depth >= _MAX_IMPORT_DEPTH:
            raise RuntimeConfigError(f"{shown}: imports nested deeper than {_MAX_IMPORT_DEPTH}")
        for pattern in parsed.imports:
            if not os.path.isabs(pattern):
                pattern = os.path.join(os.path.dirname(shown), pattern)
            for match in _glob(root, pattern):
                visit(match, depth + 1, parsed.version)

    visit(path, 0, 1)
    return out


def _under(root: str, path: str) -> str:
    return path if root == "/" else os.path.join(root, path.lstrip("/"))


def _glob(root: str, pattern: str) -> list[str]:
    if not glob.has_magic(pattern):
        return [pattern]
    prefix = len(root.rstrip("/")) if root != "/" else 0
    return sorted(m[prefix:] for m in glob.glob(_under(root, pattern)))


# -- finding the runtime's config ------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode("utf-8", "surrogateescape") for a in f.read().split(b"\0") if a]


def config_flag(argv: Sequence[str]) -> str | None:
    """The value of containerd's `--config`/`-c` flag in `argv`, if given."""
    for i, arg in enumerate(argv[1:], 1):
        for flag in ("--config", "-config", "-c", "--c"):
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(flag + "="):
                return arg[len(flag) + 1 :]
    return None


@attrs.frozen
class ConfigLocation:
    """Where to read containerd's config: the path containerd uses, under which root."""

    path: str
    root: str  # "/" or /proc/<pid>/root
    # a missing file there means containerd runs on its defaults (else: cannot tell)
    authoritative: bool
    found_by: str  # for messages


def locate_config(explicit: str | None, pid: int | None, host_root: str = "/") -> ConfigLocation:
    """The config file of the containerd with `pid` (None: unknown), or `explicit`; without
    either, the default path under `host_root` (where the host's / is mounted)."""
    if explicit:
        return ConfigLocation(explicit, "/", False, "containerd_config of the plugin")
    fallback = DEFAULT_CONTAINERD_CONFIG
    if pid is None:
        return ConfigLocation(fallback, host_root, False, "runtime pid unknown")
    root = f"/proc/{pid}/root"
    try:
        argv = _cmdline(pid)
        os.stat(root + "/")
    except OSError:
        return ConfigLocation(fallback, host_root, False, f"pid {pid} not readable")
    flag = config_flag(argv)
    if flag is None:
        return ConfigLocation(DEFAULT_CONTAINERD_CONFIG, root, True, f"containerd pid {pid}")
    if not os.path.isabs(flag):
        try:
            flag = os.path.join(os.readlink(f"/proc/{pid}/cwd"), flag)
        except OSError:
            return ConfigLocation(flag, "/", False, f"--config of containerd pid {pid}")
    return ConfigLocation(flag, root, True, f"--config of containerd pid {pid}")


# -- the decision ----------------------------------------------------------------------------


@attrs.frozen
class ModeChoice:
    """The delivery mode, why (logged at Configure), and what else to say or do."""

    mode: str
    why: str
    # native was asked for but the runtime cannot resolve the names: each request fails so
    refusal: str | None = None
    warnings: tuple[str, ...] = ()


class RuntimeProbe:
    """Reads the runtime's CDI settings at Configure (see the module docstring)."""

    def __init__(
        self,
        containerd_config: str | None = None,
        runtime_pid: Callable[[], int | None] = lambda: None,
        host_root: str = "/",
    ) -> None:
        self.containerd_config = containerd_config
        self.runtime_pid = runtime_pid
        self.host_root = host_root

    def containerd_cdi(self, major: int) -> ContainerdCdi | RuntimeConfigError:
        """What containerd's config says, or why it cannot be told."""
        where = locate_config(self.containerd_config, self.runtime_pid(), self.host_root)
        try:
            if not where.authoritative and _read_regular(_under(where.root, where.path)) is None:
                shown = _under(where.root, where.path)
                return RuntimeConfigError(
                    f"{shown} not found ({where.found_by}); set containerd_config to "
                    "containerd's config file as the plugin sees it"
                )
            return read_containerd_cdi(where.path, major, where.root)
        except RuntimeConfigError as error:
            return error


def restricts_annotations(policy: Policy, kinds: Iterable[str]) -> bool:
    """Whether the policy refuses some annotation request for devices of these kinds."""
    return (
        policy.annotation_namespaces is not None
        or policy.allowed_kinds is not None
        or not policy.management_kinds.isdisjoint(kinds)
    )


def _native_versions(ranges: Sequence[tuple[tuple[int, int, int], tuple[int, int, int]]]) -> str:
    return " or ".join(">= " + ".".join(map(str, first)) for first, _ in ranges)


_RESOLVE = "set mode: resolve for the plugin"


def choose_mode(
    setting: str,
    runtime_name: str,
    runtime_version: str,
    spec_dirs: Sequence[str] = (),
    probe: RuntimeProbe | None = None,
    annotations_restricted: bool = False,
) -> ModeChoice:
    """The delivery mode for this runtime (`setting`: auto, resolve or native).

    `spec_dirs` are the plugin's; `annotations_restricted`: the policy refuses some
    annotation requests (then containerd's own CDI on is worth a warning).
    """
    runtime = f"{runtime_name} {runtime_version}".strip() or "an unnamed runtime"
    ranges = NATIVE_CDI_VERSIONS.get(runtime_name)
    version = parse_runtime_version(runtime_version)
    cdi: ContainerdCdi | RuntimeConfigError | None = None
    if runtime_name == "containerd" and version is not None and probe is not None:
        cdi = probe.containerd_cdi(version[0])
    warnings: tuple[str, ...] = ()
    if isinstance(cdi, ContainerdCdi) and cdi.enabled and annotations_restricted:
        warnings = (
            f"containerd's own CDI is on ({cdi.enabled_from}): it injects the devices of "
            "cdi.k8s.io/ container annotations itself, before the plugin and whatever its "
            "policy says; set enable_cdi = false there (and mode: resolve) for the policy to "
            "govern them",
        )
    if setting == "resolve":
        return ModeChoice("resolve", "mode resolve set by configuration", None, warnings)

    # What stops the runtime from resolving our names, and the fix; or why we cannot tell.
    problem: tuple[str, str] | None = None
    unknown: str | None = None
    if ranges is None or version is None:
        unknown = f"{runtime} is not known to take CDI names over NRI"
    elif not any(first <= version < end for first, end in ranges):
        problem = (
            f"{runtime} drops CDI names handed over NRI (needs {_native_versions(ranges)})",
            _RESOLVE,
        )
    elif not isinstance(cdi, ContainerdCdi):
        unknown = f"cannot tell whether {runtime} resolves CDI names: {cdi or 'not probed'}"
    elif not cdi.enabled:
        problem = (
            f"{runtime} has its CDI support off ({cdi.enabled_from})",
            f"set enable_cdi = true there, or {_RESOLVE}",
        )
    elif missing := cdi.reads(spec_dirs):
        problem = (
            f"{runtime} does not read the plugin's spec dir(s) {', '.join(missing)} "
            f"({cdi.dirs_from})",
            f"add them to cdi_spec_dirs there, or {_RESOLVE}",
        )

    if setting == "native":
        if problem is not None:
            what, fix = problem
            return ModeChoice(
                "native",
                f"mode native set by configuration, but {what}; every container with a "
                f"request fails until you {fix}",
                f"mode native, but {what}: {fix}",
                warnings,
            )
        why = "mode native set by configuration" + (f", but {unknown}" if unknown else "")
        return ModeChoice("native", why, None, warnings)
    if problem is not None:
        return ModeChoice("resolve", problem[0], None, warnings)
    if unknown is not None:
        return ModeChoice("resolve", unknown, None, warnings)
    assert isinstance(cdi, ContainerdCdi)
    why = f"{runtime} resolves CDI names handed over NRI ({cdi.enabled_from}; {cdi.dirs_from})"
    return ModeChoice("native", why, None, warnings)
