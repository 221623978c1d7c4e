"""Linux inotify, the part the registry's auto-refresh needs, through the process's own libc.

Small on purpose: watchdog (three threads) and inotify_simple (whose `ctypes.util` import
brings shutil, tempfile and subprocess along) each cost the NRI plugin about a megabyte of
its resident memory; this costs ctypes alone. Only Linux has inotify: on anything else
`Inotify()` raises OSError like a failing inotify_init1 would.
"""

from __future__ import annotations

import ctypes
import os
import struct
from typing import NamedTuple

# <sys/inotify.h>
MODIFY = 0x002
ATTRIB = 0x004
CLOSE_WRITE = 0x008
MOVED_FROM = 0x040
MOVED_TO = 0x080
CREATE = 0x100
DELETE = 0x200
DELETE_SELF = 0x400
MOVE_SELF = 0x800
Q_OVERFLOW = 0x4000  # events were lost (the queue was full): rescan everything
IGNORED = 0x8000  # the watch is gone (its directory was removed, or rm_watch)
ONLYDIR = 0x1000000
ISDIR = 0x40000000

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows
_libc: ctypes.CDLL | None = None


class Event(NamedTuple):
    """One inotify event: watch descriptor, mask, and the name inside the watched dir."""

    wd: int
    mask: int
    name: str


def _call(result: int) -> int:
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


class Inotify:
    """An inotify instance (non-blocking, close-on-exec): poll `fileno()`, then `read()`."""

    def __init__(self) -> None:
        global _libc
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        try:
            init = _libc.inotify_init1
        except AttributeError:
            raise OSError(0, "inotify is not available on this system") from None
        self._libc = _libc
        self._fd = _call(init(os.O_NONBLOCK | os.O_CLOEXEC))

    def fileno(self) -> int:
        """The descriptor to poll for readability."""
        return self._fd

    def add_watch(self, path: str, mask: int) -> int:
        """Watch `path` for the events in `mask`; returns the watch descriptor."""
        return _call(self._libc.inotify_add_watch(self._fd, os.fsencode(path), mask))

    def rm_watch(self, wd: int) -> None:
        """Stop a watch (an IGNORED event follows)."""
        _call(self._libc.inotify_rm_watch(self._fd, wd))

    def read(self) -> list[Event]:
        """The events queued now (none if there are none)."""
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return []
        events = []
        pos = 0
        while pos + _EVENT.size <= len(data):
            wd, mask, _cookie, size = _EVENT.unpack_from(data, pos)
            pos += _EVENT.size
            name = os.fsdecode(data[pos : pos + size].rstrip(b"\0"))
            pos += size
            events.append(Event(wd, mask, name))
        return events

    def close(self) -> None:
        """Release the instance and all its watches."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
