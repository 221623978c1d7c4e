"""Mount a small in-memory file over a file in the rootfs, using only fds (Linux >= 5.2).

The new mount API makes this path-free: a detached tmpfs (fsopen/fsmount) holds the new file,
open_tree clones a mount of just that file, and move_mount attaches it onto the target's O_PATH
fd, which came from the in-rootfs walk. No directory of the host is used as a staging mount
point, and no path string is resolved after the walk. ctypes is imported here only, because it
costs ~4 ms of start-up and this runs only when there is something to mount.
"""

from __future__ import annotations

import os

from cdi.hook.errors import HookError

# Syscall numbers of the new mount API are the same on every Linux architecture.
_OPEN_TREE, _MOVE_MOUNT, _FSOPEN, _FSCONFIG, _FSMOUNT = 428, 429, 430, 431, 432
_FSOPEN_CLOEXEC = 0x1
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_FSMOUNT_CLOEXEC = 0x1
_MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV, _MOUNT_ATTR_NOEXEC = 0x2, 0x4, 0x8
_OPEN_TREE_CLONE = 0x1
_MOVE_MOUNT_F_EMPTY_PATH, _MOVE_MOUNT_T_EMPTY_PATH = 0x4, 0x40


def mount_file_over(target_fd: int, data: bytes, mode: int, what: str) -> None:
    """Make the file behind `target_fd` show `data` (a read-only-mode tmpfs file) instead."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long

    def call(name: str, *args: object) -> int:
        # syscall(2) is variadic and reads longs: widen ints so no upper bits are left undefined.
        wide = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
        ret = int(syscall(*wide))
        if ret < 0:
            code = ctypes.get_errno()
            raise HookError(f"{what}: {name} failed: {os.strerror(code)}")
        return ret

    fds: list[int] = []
    try:
        fs = call("fsopen", _FSOPEN, b"tmpfs", _FSOPEN_CLOEXEC)
        fds.append(fs)
        call("fsconfig", _FSCONFIG, fs, _FSCONFIG_SET_STRING, b"mode", b"0755", 0)
        call("fsconfig", _FSCONFIG, fs, _FSCONFIG_CMD_CREATE, None, None, 0)
        attrs = _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | _MOUNT_ATTR_NOEXEC
        mnt = call("fsmount", _FSMOUNT, fs, _FSMOUNT_CLOEXEC, attrs)
        fds.append(mnt)
        name = "file"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode, dir_fd=mnt)
        try:
            os.write(fd, data)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        flags = _OPEN_TREE_CLONE | os.O_CLOEXEC
        tree = call("open_tree", _OPEN_TREE, mnt, name.encode(), flags)
        fds.append(tree)
        move = _MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH
        call("move_mount", _MOVE_MOUNT, tree, b"", target_fd, b"", move)
    finally:
        for fd in fds:
            os.close(fd)
