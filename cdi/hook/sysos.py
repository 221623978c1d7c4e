"""`os` for the hook, without importing os: the hook's modules use it as `os`.

`os` is the `posix` C module with Python on top: os.environ (built on _collections_abc) and
os.path (posixpath, genericpath, stat). Importing it costs about 1 ms of every container start,
more than most actions of the hook, and the interpreter does not load it by itself under
`-I -S`. The hook needs only the system calls, which are `posix`'s own functions (os.open is
posix.open), and a few path functions on POSIX str paths, written out here.
"""

from __future__ import annotations

from _stat import S_ISDIR
from posix import *  # noqa: F403  # the system calls and O_* constants: the same objects as os's
from posix import _exit as _exit  # the star leaves out underscore names

SEEK_SET = 0


class path:  # stands where os.path stands in the callers: os.path.join(...)
    """The os.path functions the hook uses, for POSIX str paths."""

    @staticmethod
    def isabs(p: str) -> bool:
        """As os.path.isabs."""
        return p.startswith("/")

    @staticmethod
    def join(a: str, *parts: str) -> str:
        """As os.path.join."""
        out = a
        for part in parts:
            if part.startswith("/"):
                out = part
            elif not out or out.endswith("/"):
                out += part
            else:
                out += "/" + part
        return out

    @staticmethod
    def split(p: str) -> tuple[str, str]:
        """As os.path.split."""
        i = p.rfind("/") + 1
        head, tail = p[:i], p[i:]
        if head and head != "/" * len(head):
            head = head.rstrip("/")
        return head, tail

    @staticmethod
    def dirname(p: str) -> str:
        """As os.path.dirname."""
        return path.split(p)[0]

    @staticmethod
    def basename(p: str) -> str:
        """As os.path.basename."""
        return p[p.rfind("/") + 1 :]

    @staticmethod
    def normpath(p: str) -> str:
        """As os.path.normpath: no `.`, `..` folded lexically, no repeated slashes."""
        if not p:
            return "."
        initial = 2 if p.startswith("//") and not p.startswith("///") else int(p.startswith("/"))
        parts: list[str] = []
        for part in p.split("/"):
            if part in ("", "."):
                continue
            if part != ".." or (not initial and not parts) or (parts and parts[-1] == ".."):
                parts.append(part)
            elif parts:
                parts.pop()
        return "/" * initial + "/".join(parts) or "."

    @staticmethod
    def isdir(p: str) -> bool:
        """As os.path.isdir."""
        try:
            return S_ISDIR(stat(p).st_mode)  # noqa: F405
        except (OSError, ValueError):
            return False
