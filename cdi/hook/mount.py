"""Mount a small in-memory file over a file in the rootfs, using only fds (Linux >= 5.2).

The new mount API makes this path-free: a detached tmpfs (fsopen/fsmount) holds the new file,
open_tree clones a mount of just that file, and move_mount attaches it onto the target's O_PATH
fd, which came from the in-rootfs walk. No directory of the host is used as a staging mount
point, and no path string is resolved after the walk. The syscalls go through `_ctypes`, the C
half of ctypes, imported here only: the ctypes package on top of it costs ~2.5 ms more of the
container start (it imports struct and types and builds dozens of classes) and is not needed
to call one variadic C function.
"""

from __future__ import annotations

import sys

from cdi.hook import sysos as os  # os without its start-up cost (see sysos)
from cdi.hook.errors import HookError

TYPE_CHECKING = False  # typing would cost ~8 ms of start-up
if TYPE_CHECKING:
    from typing import Any

# Syscall numbers of the new mount API are the same on every Linux architecture.
_OPEN_TREE, _MOVE_MOUNT, _FSOPEN, _FSCONFIG, _FSMOUNT = 428, 429, 430, 431, 432
_MOUNT_SETATTR = 442
_AT_EMPTY_PATH = 0x1000
_MOUNT_ATTR_RDONLY = 0x1
_ENOSYS = 38
_FSOPEN_CLOEXEC = 0x1
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_FSMOUNT_CLOEXEC = 0x1
_MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV, _MOUNT_ATTR_NOEXEC = 0x2, 0x4, 0x8
_OPEN_TREE_CLONE = 0x1
_MOVE_MOUNT_F_EMPTY_PATH, _MOVE_MOUNT_T_EMPTY_PATH = 0x4, 0x40


def _syscall() -> tuple[Any, type[Any], Any]:
    """libc's syscall(2) as a callable, the C long type, and get_errno, from `_ctypes` alone."""
    import _ctypes

    class CLong(_ctypes._SimpleCData):  # type: ignore[type-arg]  # what ctypes.c_long is
        _type_ = "l"

    class Function(_ctypes.CFuncPtr):  # what CDLL(..., use_errno=True) makes of a symbol
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = CLong

    class Libc:  # the handle of the running program: libc's symbols included
        _handle = _ctypes.dlopen(None, 0)  # type: ignore[arg-type]  # NULL: the program

    # The C code reads only `_handle` of the library object (typeshed asks for a CDLL).
    return Function(("syscall", Libc)), CLong, _ctypes.get_errno  # type: ignore[arg-type]


def mount_file_over(target_fd: int, data: bytes, mode: int, what: str) -> None:
    """Make the file behind `target_fd` show `data` (a read-only-mode tmpfs file) instead."""
    syscall, c_long, get_errno = _syscall()

    def call(name: str, *args: object, tolerate: int = 0) -> int:
        # syscall(2) is variadic and reads longs: widen ints so no upper bits are left undefined.
        wide = [c_long(a) if isinstance(a, int) else a for a in args]
        ret = int(syscall(*wide))
        if ret < 0:
            code = get_errno()
            if code == tolerate:
                return ret
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
        # Read-only, as nvidia-cdi-hook's bind mount: container root (CAP_DAC_OVERRIDE) could
        # write a 0444 file. mount_setattr is Linux >= 5.12; before that the mode must do.
        # struct mount_attr {u64 attr_set, attr_clr, propagation, userns_fd}, passed as bytes.
        attr = _MOUNT_ATTR_RDONLY.to_bytes(8, sys.byteorder) + bytes(24)
        call("mount_setattr", _MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, attr, 32, tolerate=_ENOSYS)
        move = _MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH
        call("move_mount", _MOVE_MOUNT, tree, b"", target_fd, b"", move)
    finally:
        for fd in fds:
            os.close(fd)
