"""What the runtime says about the container: OCI state on stdin -> bundle -> config.json.

config.json gives the rootfs (root.path) and the device nodes the runtime creates in the
container (linux.devices), from which the per-device work (DRM by-path links, the EGL
application profile) is derived: one hook call serves a container whatever its devices.
"""

from __future__ import annotations

from _stat import S_ISREG

from cdi.hook import sysos as os  # os without its start-up cost (see sysos)
from cdi.hook.errors import HookError
from cdi.hook.rootfs import file_kind

TYPE_CHECKING = False  # typing would cost ~8 ms of start-up
if TYPE_CHECKING:
    from typing import Any, BinaryIO

# A config.json is a few KiB; anything this large is not one and is refused before parsing.
MAX_JSON_BYTES = 16 << 20


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _Context:
    """The attributes `_json.make_scanner` reads; plain types select its C fast paths."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    parse_constant = staticmethod(_reject_constant)


def parse_json(data: bytes, source: str) -> Any:
    """Decode JSON from `source` (named in errors) without importing the json package.

    `import json` pulls in `re` and costs about 7 ms of start-up on the CI machine, more than
    the rest of the hook together; the C scanner underneath it costs nothing. On any failure the
    full json module is imported only to word the error.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise HookError(f"{source}: not UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        import _json

        # typeshed wants a JSONDecoder-like context; the C code reads only the attributes above.
        scan = _json.make_scanner(_Context())  # type: ignore[arg-type]
        start = len(text) - len(text.lstrip())
        value, end = scan(text, start)
        if text[end:].strip():
            raise ValueError("extra data")
        return value
    except Exception:
        pass
    import json

    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        raise HookError(f"{source}: not valid JSON ({err})") from None


def _read_limited(fd: int, source: str) -> bytes:
    chunks = []
    size = 0
    while size <= MAX_JSON_BYTES:
        chunk = os.read(fd, MAX_JSON_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > MAX_JSON_BYTES:
        raise HookError(f"{source}: larger than {MAX_JSON_BYTES} bytes")
    return b"".join(chunks)


def read_state(stream: BinaryIO) -> dict[str, Any]:
    """Read and check the OCI state object the runtime writes to the hook's stdin."""
    source = "OCI state on stdin"
    data = stream.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise HookError(f"{source}: larger than {MAX_JSON_BYTES} bytes")
    if not data.strip():
        raise HookError(f"{source}: empty (the runtime passes the container state here)")
    state = parse_json(data, source)
    if not isinstance(state, dict):
        raise HookError(f"{source}: expected a JSON object, got {type(state).__name__}")
    bundle = state.get("bundle")
    if not isinstance(bundle, str) or not bundle:
        raise HookError(f"{source}: field 'bundle' missing or not a non-empty string")
    if not os.path.isabs(bundle) or "\0" in bundle:
        raise HookError(f"{source}: bundle {bundle!r} is not an absolute path")
    return state


def read_regular(path: str, what: str) -> bytes:
    """Contents of the host file `path`, only if it is a regular file (never blocks).

    Opened O_PATH first, which has no side effect on any file type, checked with fstat, then
    reopened for reading through /proc/self/fd (the same inode) with O_NONBLOCK: a FIFO or a
    device planted where a file is expected is refused, never opened for reading.
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as err:
        raise HookError(f"{what} {path}: cannot read: {err.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not S_ISREG(mode):
            raise HookError(f"{what} {path}: is {file_kind(mode)}, not a regular file")
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            rfd = os.open(f"/proc/self/fd/{fd}", flags)
        except OSError as err:
            raise HookError(f"{what} {path}: cannot read: {err.strerror}") from None
    finally:
        os.close(fd)
    try:
        return _read_limited(rfd, f"{what} {path}")
    except OSError as err:
        raise HookError(f"{what} {path}: cannot read: {err.strerror}") from None
    finally:
        os.close(rfd)


class Device:
    """One entry of linux.devices: a node the runtime creates in the container."""

    __slots__ = ("minor", "path", "type")

    def __init__(self, path: str, type_: str, minor: int | None) -> None:
        self.path = path
        self.type = type_
        self.minor = minor


class Container:
    """The bundle's config.json: the rootfs path and (parsed when first asked) the devices."""

    def __init__(self, bundle: str) -> None:
        self.bundle = bundle
        self.config = os.path.join(bundle, "config.json")
        spec = parse_json(read_regular(self.config, "bundle config"), self.config)
        if not isinstance(spec, dict):
            raise HookError(f"{self.config}: expected a JSON object")
        self.spec: dict[str, Any] = spec
        root = spec.get("root")
        path = root.get("path") if isinstance(root, dict) else None
        if not isinstance(path, str) or not path or "\0" in path:
            raise HookError(f"{self.config}: root.path missing or not a non-empty string")
        self.rootfs = os.path.join(bundle, path)
        if not os.path.isdir(self.rootfs):
            raise HookError(f"{self.config}: root.path {self.rootfs} is not a directory")
        self._devices: list[Device] | None = None

    def devices(self) -> list[Device]:
        """linux.devices; an error naming config.json when the list is missing or malformed."""
        if self._devices is None:
            self._devices = self._parse_devices()
        return self._devices

    def _parse_devices(self) -> list[Device]:
        linux = self.spec.get("linux")
        entries = linux.get("devices") if isinstance(linux, dict) else None
        if not isinstance(entries, list):
            raise HookError(
                f"{self.config}: linux.devices missing (the runtime lists the container's"
                " device nodes there; without it the container's GPUs are unknown)"
            )
        out = []
        for i, entry in enumerate(entries):
            path = entry.get("path") if isinstance(entry, dict) else None
            if not isinstance(path, str) or not path.startswith("/"):
                raise HookError(f"{self.config}: linux.devices[{i}]: path missing or relative")
            kind = entry.get("type")
            minor = entry.get("minor")
            if not isinstance(kind, str) or (minor is not None and type(minor) is not int):
                raise HookError(f"{self.config}: linux.devices[{i}] ({path}): bad type or minor")
            out.append(Device(os.path.normpath(path), kind, minor))
        return out

    def device_paths(self) -> set[str]:
        """Container paths of every device node the runtime creates."""
        return {device.path for device in self.devices()}


def load_container(stream: BinaryIO) -> Container:
    """The container described by the OCI state on `stream`."""
    return Container(read_state(stream)["bundle"])


def rootfs_path(bundle: str) -> str:
    """The container's root directory from `<bundle>/config.json` (root.path, bundle-relative)."""
    return Container(bundle).rootfs
