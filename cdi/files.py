"""Reading files we are given (spec files, inventories, configs): regular files only.

Opening a FIFO for reading waits for a writer, and a device may block or never end: a path
named like a spec must never hang a scan, a command or a daemon. Small and stdlib-only, so
that every program (the NRI plugin's registry, `gpu-cdi generate --inventory`) can use it.
"""

from __future__ import annotations

import errno
import os
import stat

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    """What `st_mode` says a path is, as an error message words it: "a FIFO", "a directory"."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a file")


def _not_regular(mode: int, path: str) -> OSError | None:
    if stat.S_ISREG(mode):
        return None
    return OSError(errno.EINVAL, f"not a regular file ({file_kind(mode)})", path)


def read_regular_file(path: str) -> bytes:
    """The content of the regular file at `path` (symlinks followed).

    OSError for anything else (strerror says what it is): a FIFO or a device is never
    opened for reading in a way that could block or wait for a writer.
    """
    error = _not_regular(os.stat(path).st_mode, path)
    if error is not None:
        raise error
    # Checked again on what was opened: the name may have been replaced in between.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with open(fd, "rb") as stream:
        error = _not_regular(os.fstat(fd).st_mode, path)
        if error is not None:
            raise error
        return stream.read()
