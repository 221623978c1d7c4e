"""Paths inside another root (the node's / mounted at /host, a driver container at
/run/nvidia/driver, a test's fake host): symlinks are followed as if that root were `/`, and
`..` stops at it, so no path read through a root ever leaves it."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_MAX_LINKS = 40

# Where resolving a path prefix has got to: its resolved components and the symlinks followed
# on the way (they count against _MAX_LINKS); None: something on the way is missing.
_State = tuple[tuple[str, ...], int]
_START: _State = ((), 0)
# Inside `one_pass`, per thread: `memo`, the state of each (root, path prefix) resolved so far.
_PASS = threading.local()


@contextmanager
def one_pass() -> Iterator[None]:
    """Within the block, each path prefix under each root is resolved once: a discovery
    reads hundreds of files in a few directories, and the node does not change under it.
    Nothing is remembered after the block."""
    outer = getattr(_PASS, "memo", None)
    _PASS.memo = {}
    try:
        yield
    finally:
        _PASS.memo = outer


def host(root: str, path: str) -> str:
    """`path` (absolute, inside `root`) prefixed with `root`; no symlink is looked at."""
    if path == "/":
        return root
    return path if root == "/" else root.rstrip("/") + path


def resolve(root: str, path: str) -> str | None:
    """`path` with every symlink resolved inside `root`; None when something is missing."""
    parts = [part for part in path.split("/") if part]
    memo: dict[str, _State | None] | None = getattr(_PASS, "memo", None)
    state: _State | None
    if memo is None:
        state = _walk(root, _START, parts)
    else:
        # Resolving a path is resolving its parent, then its last component from there: the
        # state after each prefix is what the walk of the whole path would have reached.
        state = _START
        key = root + "\0"
        for part in parts:
            key += "/" + part
            if key in memo:
                state = memo[key]
            else:
                state = memo[key] = _walk(root, state, [part])
            if state is None:
                return None
    return None if state is None else "/" + "/".join(state[0])


def _walk(root: str, state: _State, parts: list[str]) -> _State | None:
    """The state after resolving the components `parts` from `state`."""
    done = list(state[0])
    hops = state[1]
    pending = parts[::-1]
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = "/" + "/".join([*done, part])
        try:
            target = os.readlink(host(root, candidate))
        except OSError as error:
            if error.errno != errno.EINVAL:
                return None
            done.append(part)
            continue
        hops += 1
        if hops > _MAX_LINKS:
            return None
        if target.startswith("/"):
            done = []
        pending.extend(reversed([p for p in target.split("/") if p]))
    return tuple(done), hops


def local(root: str, path: str) -> str | None:
    """Where `path` is in this filesystem, its symlinks resolved inside `root` (None: missing)."""
    real = resolve(root, path)
    return None if real is None else host(root, real)


def entry(root: str, path: str) -> str | None:
    """Where the directory entry `path` is, its last component not followed (a device node
    or a symlink to read); None when its directory is missing."""
    parent, _, name = path.rstrip("/").rpartition("/")
    folder = resolve(root, parent or "/")
    if folder is None or name in ("", ".", ".."):
        return None
    return host(root, folder.rstrip("/") + "/" + name)


def is_file(root: str, path: str) -> bool:
    """True when `path` (already resolved) is a regular file under `root`."""
    return os.path.isfile(host(root, path))


def is_dir(root: str, path: str) -> bool:
    """True when `path` (already resolved) is a directory under `root`."""
    return os.path.isdir(host(root, path))


def listdir(root: str, path: str) -> list[str]:
    """Sorted names in directory `path` under `root` ([] when it is not a readable directory)."""
    folder = local(root, path)
    if folder is None:
        return []
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def read_text(root: str, path: str) -> str | None:
    """The text of file `path` under `root` (None when it is missing or unreadable)."""
    where = local(root, path)
    if where is None:
        return None
    try:
        with open(where, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None
