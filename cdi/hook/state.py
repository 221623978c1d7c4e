"""OCI container state on stdin -> bundle -> config.json -> the rootfs path."""

from __future__ import annotations

import os

from cdi.hook.errors import HookError

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
    except ValueError as err:
        raise HookError(f"{source}: not valid JSON ({err})") from None


def _read_limited(stream: BinaryIO, source: str) -> bytes:
    data = stream.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise HookError(f"{source}: larger than {MAX_JSON_BYTES} bytes")
    return data


def read_state(stream: BinaryIO) -> dict[str, Any]:
    """Read and check the OCI state object the runtime writes to the hook's stdin."""
    source = "OCI state on stdin"
    data = _read_limited(stream, source)
    if not data.strip():
        raise HookError(f"{source}: empty (the runtime passes the container state here)")
    state = parse_json(data, source)
    if not isinstance(state, dict):
        raise HookError(f"{source}: expected a JSON object, got {type(state).__name__}")
    bundle = state.get("bundle")
    if not isinstance(bundle, str) or not bundle:
        raise HookError(f"{source}: field 'bundle' missing or not a non-empty string")
    if not os.path.isabs(bundle):
        raise HookError(f"{source}: bundle {bundle!r} is not an absolute path")
    return state


def rootfs_path(bundle: str) -> str:
    """The container's root directory from `<bundle>/config.json` (root.path, bundle-relative)."""
    config = os.path.join(bundle, "config.json")
    try:
        with open(config, "rb") as stream:
            data = _read_limited(stream, config)
    except OSError as err:
        raise HookError(f"bundle {bundle}: cannot read config.json: {err.strerror}") from None
    spec = parse_json(data, config)
    if not isinstance(spec, dict):
        raise HookError(f"{config}: expected a JSON object")
    root = spec.get("root")
    path = root.get("path") if isinstance(root, dict) else None
    if not isinstance(path, str) or not path:
        raise HookError(f"{config}: root.path missing or not a non-empty string")
    full = os.path.join(bundle, path)
    if not os.path.isdir(full):
        raise HookError(f"{config}: root.path {full} is not a directory")
    return full
