"""Paths inside another root (a driver container at /run/nvidia/driver, a test's fake host):
symlinks are followed as if that root were `/`, so an absolute link never escapes it."""

from __future__ import annotations

import errno
import os

_MAX_LINKS = 40


def host(root: str, path: str) -> str:
    """The host path of `path` (absolute, inside `root`)."""
    return path if root == "/" else root.rstrip("/") + path


def resolve(root: str, path: str) -> str | None:
    """`path` with every symlink resolved inside `root`; None when something is missing."""
    pending = [part for part in path.split("/") if part]
    pending.reverse()
    done: list[str] = []
    hops = 0
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
    return "/" + "/".join(done)


def is_file(root: str, path: str) -> bool:
    """True when `path` (already resolved) is a regular file under `root`."""
    return os.path.isfile(host(root, path))


def is_dir(root: str, path: str) -> bool:
    """True when `path` (already resolved) is a directory under `root`."""
    return os.path.isdir(host(root, path))


def listdir(root: str, path: str) -> list[str]:
    """Sorted names in directory `path` under `root` ([] when it is not a readable directory)."""
    try:
        return sorted(os.listdir(host(root, path)))
    except OSError:
        return []
