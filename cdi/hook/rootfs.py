"""Paths inside an untrusted container rootfs, resolved without ever leaving it.

The image decides every symlink under the rootfs, so a path such as
/usr/lib/x86_64-linux-gnu/libcuda.so may pass through links like `x86_64-linux-gnu -> /etc` or
`-> ../../../../etc`. Every path is walked one component at a time with O_PATH|O_NOFOLLOW
relative to the directory fd reached so far; a symlink is read through its own fd and resolved
as if the rootfs were `/` (absolute targets restart at the rootfs, `..` never climbs above it).
This gives the semantics of openat2(RESOLVE_IN_ROOT); openat2 itself would need ctypes, whose
import alone costs more (about 4 ms) than all walks of a hook run together.

Every operation then acts on an fd or on (directory fd, single name), never on a path string, so
a link swapped in after a component was checked cannot redirect it: the fds held were inside
the rootfs when opened and stay the same objects.
"""

from __future__ import annotations

import errno
from _stat import (
    S_IFBLK,
    S_IFCHR,
    S_IFDIR,
    S_IFIFO,
    S_IFLNK,
    S_IFMT,
    S_IFSOCK,
    S_ISDIR,
    S_ISLNK,
    S_ISREG,
)

from cdi.hook import sysos as os  # os without its start-up cost (see sysos)
from cdi.hook.errors import HookError

TYPE_CHECKING = False  # typing would cost ~8 ms of start-up
if TYPE_CHECKING:
    from collections.abc import Callable


class NotFound(HookError):
    """A component of the path does not exist inside the rootfs."""


MAX_LINKS = 40  # as the kernel's ELOOP limit for one path
MAX_CREATED = 4096  # directories made for one path: a PATH_MAX path has at most 2048 names
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC

# Called with each component name just before it is opened, and with the final name just before
# a file or link is renamed into place. Tests set it to swap links at the worst moments; it is
# never set in production.
step_hook: Callable[[str], None] | None = None


def _discard(name: str, dir_fd: int) -> None:
    """Remove a leftover temp entry; failing leaves a dotfile and must not hide the real error."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        return


def _reason(err: OSError) -> str:
    return err.strerror or errno.errorcode.get(err.errno or 0, str(err))


_KINDS = {
    S_IFDIR: "a directory",
    S_IFIFO: "a FIFO",
    S_IFCHR: "a character device",
    S_IFBLK: "a block device",
    S_IFSOCK: "a socket",
    S_IFLNK: "a symbolic link",
}


def file_kind(mode: int) -> str:
    """'a FIFO', 'a directory', ... for a stat mode: what a non-regular file is."""
    return _KINDS.get(S_IFMT(mode), "not a regular file")


class Rootfs:
    """A container root directory; every method takes container paths (`/etc/ld.so.conf`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise HookError(f"rootfs {path}: {_reason(err)}") from None
        # Directories resolved so far, by the path asked for: the dozens of links of one
        # library directory walk it once. An fd stays the directory it was opened as (inside
        # the rootfs) whatever changes later; replacing an entry may change what a path names,
        # so every replacement empties the cache.
        self._dirs: dict[str, int] = {}

    def close(self) -> None:
        """Release the rootfs fd."""
        self._forget()
        os.close(self.fd)

    def _forget(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def __enter__(self) -> Rootfs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def error(self, path: str, reason: str, kind: type[HookError] = HookError) -> HookError:
        """An error naming the container path, the rootfs and the reason."""
        return kind(f"{path} (in rootfs {self.path}): {reason}")

    # -- resolution ---------------------------------------------------------------------------

    def _walk(
        self,
        path: str,
        parts: list[str],
        *,
        follow_last: bool,
        create: bool,
        dir_mode: int = 0o755,
        names: list[str] | None = None,
    ) -> int:
        """Resolve `parts` in the rootfs; returns an O_PATH fd the caller must close.

        `names`, if given, ends up holding the resolved path's components."""
        stack = [os.dup(self.fd)]
        names = [] if names is None else names  # where `stack[-1]` is
        todo = parts[::-1]
        links = made = 0
        try:
            while todo:
                name = todo.pop()
                if name in ("", "."):
                    continue
                if name == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                        names.pop()
                    continue
                last = not todo
                where = "/" + "/".join([*names, name])
                if step_hook is not None:
                    step_hook(name)
                try:
                    fd = os.open(name, _PATH_FLAGS, dir_fd=stack[-1])
                except FileNotFoundError:
                    if not create:
                        raise self.error(path, f"{where} does not exist", NotFound) from None
                    made += 1
                    if made > MAX_CREATED:  # someone keeps removing what we create
                        raise self.error(path, f"{where} vanished after creation") from None
                    try:
                        os.mkdir(name, dir_mode, dir_fd=stack[-1])
                    except FileExistsError:
                        pass  # created concurrently: open it below like any other entry
                    except OSError as err:
                        raise self.error(path, f"cannot create {where}: {_reason(err)}") from None
                    todo.append(name)
                    continue
                except OSError as err:
                    raise self.error(path, f"{where}: {_reason(err)}") from None
                mode = os.fstat(fd).st_mode
                if S_ISLNK(mode) and (follow_last or not last):
                    try:
                        target = os.readlink("", dir_fd=fd)
                    except OSError as err:
                        # /proc/<pid>/root and its kind refuse readlink to a process that may
                        # not trace <pid>: say which link, never a bare "Permission denied".
                        why = f"{where} is a link that cannot be followed: {_reason(err)}"
                        raise self.error(path, why) from None
                    finally:
                        os.close(fd)
                    links += 1
                    if links > MAX_LINKS:
                        raise self.error(path, f"more than {MAX_LINKS} symlinks to follow")
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                        names.clear()
                    todo.extend(reversed(target.split("/")))
                    continue
                if not last and not S_ISDIR(mode):
                    os.close(fd)
                    raise self.error(path, f"{where} is not a directory")
                stack.append(fd)
                names.append(name)
            return stack.pop()
        finally:
            for fd in stack:
                os.close(fd)

    @staticmethod
    def _split(path: str) -> list[str]:
        return path.split("/")

    def resolve(self, path: str, *, follow: bool = True) -> int:
        """O_PATH fd of `path`, links resolved inside the rootfs; the caller closes it."""
        return self._walk(path, self._split(path), follow_last=follow, create=False)

    def realpath(self, path: str) -> str:
        """`path` with every link resolved inside the rootfs (NotFound if it does not exist)."""
        names: list[str] = []
        os.close(self._walk(path, self._split(path), follow_last=True, create=False, names=names))
        return "/" + "/".join(names)

    def parent(self, path: str, *, create: bool = False, dir_mode: int = 0o755) -> tuple[int, str]:
        """(fd of the directory holding `path`, final name); creates missing dirs if asked."""
        parts = [p for p in self._split(path) if p not in ("", ".")]
        if not parts or parts[-1] == "..":
            raise self.error(path, "does not name a file")
        key = "/".join(parts[:-1])
        cached = self._dirs.get(key)
        if cached is not None:
            return os.dup(cached), parts[-1]
        fd = self._walk(path, parts[:-1], follow_last=True, create=create, dir_mode=dir_mode)
        if not S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise self.error(path, f"/{key} is not a directory")
        self._dirs[key] = os.dup(fd)
        return fd, parts[-1]

    def lookup(self, path: str, *, follow: bool = True) -> os.stat_result | None:
        """stat of `path` (links followed inside the rootfs), None if it does not exist."""
        try:
            fd = self.resolve(path, follow=follow)
        except NotFound:
            return None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    # -- operations ---------------------------------------------------------------------------

    def read_file(self, path: str, limit: int = 1 << 20) -> bytes | None:
        """Contents of the regular file at `path`, or None if it does not exist."""
        try:
            fd = self.resolve(path)
        except NotFound:
            return None
        try:
            mode = os.fstat(fd).st_mode
            # A FIFO or device planted by the image would block or have side effects on open.
            if not S_ISREG(mode):
                raise self.error(path, f"is {file_kind(mode)}, not a regular file")
            # Reopening the O_PATH fd through /proc reaches exactly the inode checked above.
            with open(f"/proc/self/fd/{fd}", "rb") as stream:
                data = stream.read(limit + 1)
        except OSError as err:
            raise self.error(path, f"cannot read: {_reason(err)}") from None
        finally:
            os.close(fd)
        if len(data) > limit:
            raise self.error(path, f"larger than {limit} bytes")
        return data

    def write_file(self, path: str, data: bytes, mode: int = 0o644, dir_mode: int = 0o755) -> None:
        """Atomically replace `path` with `data` (temp file + rename in the same directory);
        missing parent directories are made with `dir_mode`."""
        dfd, name = self.parent(path, create=True, dir_mode=dir_mode)
        tmp = f".{name}.gpu-cdi-hook.{os.getpid()}"
        try:
            _discard(tmp, dfd)  # a leftover of a killed run with our pid, or planted
            try:
                fd = os.open(
                    tmp,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    mode,
                    dir_fd=dfd,
                )
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fchmod(fd, mode)
                finally:
                    os.close(fd)
                if step_hook is not None:
                    step_hook(name)
                self._forget()  # the rename may replace a link some cached path went through
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except OSError as err:
                _discard(tmp, dfd)
                raise self.error(path, f"cannot write: {_reason(err)}") from None
        finally:
            os.close(dfd)

    def symlink(self, target: str, path: str) -> bool:
        """`ln -sf target path` inside the rootfs; False when the link was already right."""
        dfd, name = self.parent(path, create=True)
        try:
            exists = True
            try:
                if os.readlink(name, dir_fd=dfd) == target:
                    return False
            except FileNotFoundError:
                exists = False
            except OSError as err:
                if err.errno != errno.EINVAL:  # EINVAL: exists but is not a link
                    raise self.error(path, _reason(err)) from None
                if S_ISDIR(self._lstat(name, dfd, path).st_mode):
                    raise self.error(path, "exists and is a directory") from None
            if step_hook is not None:
                step_hook(name)
            try:
                if not exists:
                    # The usual case in a fresh container: one inode, no temp name and rename
                    # (each inode creation costs ~0.3 ms on the CI machine's ext4).
                    try:
                        os.symlink(target, name, dir_fd=dfd)
                        return True
                    except FileExistsError:
                        pass  # appeared meanwhile: replace it atomically like any other entry
                self._forget()
                self._replace_with_link(target, name, dfd)
            except OSError as err:
                raise self.error(path, f"cannot create link: {_reason(err)}") from None
            return True
        finally:
            os.close(dfd)

    def _lstat(self, name: str, dfd: int, path: str) -> os.stat_result:
        try:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError as err:
            raise self.error(path, _reason(err)) from None

    def soname_links(self, directory: str, pairs: list[tuple[str, str]]) -> int:
        """ldconfig's links in `directory`: for each (soname, file), `soname -> file` unless a
        link with that target is there already, or something that is not a link (ldconfig
        leaves those alone too). Names are single components. Returns how many were made."""
        try:
            dfd = self.resolve(directory)
        except NotFound:
            return 0
        made = 0
        try:
            if not S_ISDIR(os.fstat(dfd).st_mode):
                return 0
            for soname, name in pairs:
                path = f"{directory}/{soname}"
                try:
                    if os.readlink(soname, dir_fd=dfd) == name:
                        continue
                    exists = True
                except FileNotFoundError:
                    exists = False
                except OSError as err:
                    if err.errno == errno.EINVAL:  # not a link: left alone, as ldconfig does
                        continue
                    raise self.error(path, _reason(err)) from None
                try:
                    if exists:
                        self._forget()
                        self._replace_with_link(name, soname, dfd)
                    else:
                        os.symlink(name, soname, dir_fd=dfd)
                except OSError as err:
                    raise self.error(path, f"cannot create link: {_reason(err)}") from None
                made += 1
        finally:
            os.close(dfd)
        return made

    @staticmethod
    def _replace_with_link(target: str, name: str, dfd: int) -> None:
        tmp = f".{name}.gpu-cdi-hook.{os.getpid()}"
        _discard(tmp, dfd)
        os.symlink(target, tmp, dir_fd=dfd)
        try:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError:
            _discard(tmp, dfd)
            raise

    def chmod(self, path: str, mode: int) -> None:
        """chmod the object `path` resolves to inside the rootfs."""
        fd = self.resolve(path)
        try:
            # fchmod refuses O_PATH fds; the /proc magic link names exactly this inode.
            os.chmod(f"/proc/self/fd/{fd}", mode)
        except OSError as err:
            raise self.error(path, f"cannot chmod: {_reason(err)}") from None
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str] | None:
        """Names in the directory at `path`, None if it does not exist."""
        entries = self.scandir(path)
        return None if entries is None else [name for name, _ in entries]

    def scandir(self, path: str) -> list[tuple[str, bool]] | None:
        """(name, is a regular file) of each entry of the directory at `path` (entries are not
        followed), None if it does not exist."""
        try:
            fd = self.resolve(path)
        except NotFound:
            return None
        try:
            if not S_ISDIR(os.fstat(fd).st_mode):
                raise self.error(path, "is not a directory")
            dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        except OSError as err:
            raise self.error(path, f"cannot list: {_reason(err)}") from None
        finally:
            os.close(fd)
        try:
            with os.scandir(dfd) as it:
                return [(e.name, e.is_file(follow_symlinks=False)) for e in it]
        except OSError as err:
            raise self.error(path, f"cannot list: {_reason(err)}") from None
        finally:
            os.close(dfd)

    def remove(self, path: str) -> bool:
        """Remove the file or link at `path` if there is one; True if it was there."""
        try:
            dfd, name = self.parent(path)
        except NotFound:
            return False
        try:
            self._forget()
            os.unlink(name, dir_fd=dfd)
            return True
        except FileNotFoundError:
            return False
        except OSError as err:
            raise self.error(path, f"cannot remove: {_reason(err)}") from None
        finally:
            os.close(dfd)
