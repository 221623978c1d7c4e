"""Rebuild a container's ld.so.cache with the host's ldconfig, confined to the rootfs.

Why this is safe with an untrusted image:
- The ldconfig binary is the host's (the path comes from the spec, never from the image) and is
  opened before anything else; it is executed through that fd (fexecve), so no path inside the
  image can substitute another program. glibc's ldconfig is statically linked, so nothing of the
  image (its loader, its libc, LD_* variables) takes part in starting it; the environment is
  empty.
- The child chroots into the rootfs (through the rootfs fd, not a path), so every path ldconfig
  opens, including `include` lines of the image's ld.so.conf and symlinks in library
  directories, is resolved by the kernel inside the rootfs.
- Before exec it drops to uid/gid 65534 with no supplementary groups. An unprivileged process
  cannot chroot again, cannot follow /proc/<pid>/root of root-owned processes and cannot write
  root-owned files, so even a memory-safety bug in ldconfig exploited through a hostile ELF file
  gains nothing on the host. (nvidia-cdi-hook instead re-execs into new namespaces and
  pivot_roots, about 8 ms more per container start.)
- It runs bounded: address space, CPU time, open files, file size and a wall-clock timeout, so
  no image makes it grow or spin without end (the configuration files were checked before, see
  ldconf.py; the limits hold whatever slips past).
- Unprivileged ldconfig cannot write /etc/ld.so.cache or the library directories, so it writes
  the cache into a private scratch directory owned by 65534 and is given `-X` (no links). With
  `-v` it lists, directory by directory, every `SONAME -> file` link it would make; the hook
  makes exactly those (ldconfig's rule: missing or wrong links only, never over a file) through
  the rootfs fd walk, copies the cache into /etc the same way and removes the scratch directory.
  The result is what ldconfig run as root leaves, e.g. libnvidia-egl-gbm.so.1.
"""

from __future__ import annotations

from _stat import S_ISREG

from cdi.hook import sysos as os  # os without its start-up cost (see sysos)
from cdi.hook.errors import HookError
from cdi.hook.rootfs import Rootfs

TYPE_CHECKING = False  # typing would cost ~8 ms of start-up
if TYPE_CHECKING:
    from typing import Any

UNPRIVILEGED = 65534  # the conventional "nobody": owns nothing on the host
MAX_CACHE_BYTES = 64 << 20  # also the child's file-size limit (the cache and its listing)
MAX_LISTING_BYTES = 16 << 20
# ldconfig needs a few MiB even for images with thousands of libraries.
ADDRESS_SPACE_BYTES = 512 << 20
CPU_SECONDS = 10
OPEN_FILES = 64
# The configuration files are checked before ldconfig runs, so nothing should block it; this is
# the bound if something does (a FIFO swapped in afterwards). A rebuild takes milliseconds.
TIMEOUT_SECONDS = 20.0


class LdconfigRun:
    """The confined ldconfig of one rootfs, started at construction; `finish()` waits for it
    and applies its results, `abort()` kills it. In between, the hook's later actions run: the
    cache build takes a few ms of a container start, and they touch nothing ldconfig reads.

    The wait is sigtimedwait on SIGCHLD, blocked from before the fork: a timeout without
    `select` (a shared library to load on every container start) and without polling; the
    child is reaped only once it is known to be gone or has been killed, so its pid cannot be
    reused meanwhile.
    """

    def __init__(self, root: Rootfs, ldconfig_path: str) -> None:
        # _signal is built into the interpreter, free to import (`signal` would import enum;
        # it has no stubs). resource is loaded here, not in the child: pages the import writes
        # would each be copied there.
        import _signal  # type: ignore[import-not-found]
        import resource  # noqa: F401
        import time

        self.signal: Any = _signal
        self.root = root
        self.path = ldconfig_path
        self.pid = 0
        self.fds: list[int] = []
        # Unpredictable, so an image cannot plant it; removed only if this run created it.
        self.scratch = f".gpu-cdi-hook-ldcache.{os.urandom(6).hex()}"
        self.created = False
        self.mask: set[int] | None = None
        self.deadline = time.monotonic() + TIMEOUT_SECONDS
        try:
            self._start()
        except BaseException:
            self.abort()
            raise

    def _start(self) -> None:
        root, signal = self.root, self.signal
        ldconfig_fd = -1
        if not self.path.endswith(".real"):
            # Ubuntu's /sbin/ldconfig is a shell script around ldconfig.real: exec'd in the
            # chroot it would run the image's /bin/sh. nvidia-cdi-hook takes .real too.
            try:
                ldconfig_fd = os.open(self.path + ".real", os.O_RDONLY | os.O_CLOEXEC)
                self.path += ".real"
            except OSError:
                pass
        try:
            if ldconfig_fd < 0:
                ldconfig_fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise HookError(f"ldconfig {self.path} (on the host): {err.strerror}") from None
        self.fds.append(ldconfig_fd)
        if not S_ISREG(os.fstat(ldconfig_fd).st_mode):
            raise HookError(f"ldconfig {self.path} (on the host): not a regular file")
        scratch = self.scratch
        try:
            os.mkdir(scratch, 0o700, dir_fd=root.fd)
            self.created = True
            os.chown(scratch, UNPRIVILEGED, UNPRIVILEGED, dir_fd=root.fd, follow_symlinks=False)
        except OSError as err:
            raise root.error(f"/{scratch}", f"cannot create scratch dir: {err.strerror}") from None
        argv = ["ldconfig", "-X", "-v", "-C", f"/{scratch}/ld.so.cache", "-f", "/etc/ld.so.conf"]
        # Its output goes to memfds, not to our stderr: the runtime shows the hook's stderr as
        # the error, which must stay one line; the last message is quoted in it.
        self.out_fd = os.memfd_create("ldconfig-listing", os.MFD_CLOEXEC)
        self.fds.append(self.out_fd)
        self.err_fd = os.memfd_create("ldconfig-messages", os.MFD_CLOEXEC)
        self.fds.append(self.err_fd)
        self.mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
            _child(root.fd, ldconfig_fd, argv, self.out_fd, self.err_fd)
        self.pid = pid

    def _wait(self) -> int | None:
        """Exit code of ldconfig, or None after killing it at the deadline."""
        import time

        signal = self.signal
        while signal.sigtimedwait({signal.SIGCHLD}, max(0.0, self.deadline - time.monotonic())):
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:  # else the signal was another child's (a caller's, in tests)
                self.pid = 0
                return os.waitstatus_to_exitcode(status)
        return None  # abort() kills it

    def finish(self) -> int:
        """Wait for ldconfig; make its links and install the cache. Returns the links made."""
        root = self.root
        try:
            code = self._wait()
            if code is None:
                raise root.error(
                    "/etc/ld.so.cache",
                    f"ldconfig {self.path} did not finish within {TIMEOUT_SECONDS:g} s (killed)",
                )
            if code != 0:
                said = _last_line(self.err_fd)
                raise root.error(
                    "/etc/ld.so.cache",
                    f"ldconfig {self.path} {_exit_reason(code)}" + (f": {said}" if said else ""),
                )
            data = root.read_file(f"/{self.scratch}/ld.so.cache", limit=MAX_CACHE_BYTES)
            if data is None:
                raise root.error("/etc/ld.so.cache", f"ldconfig {self.path} wrote no cache")
            made = 0
            for directory, pairs in parse_listing(_read_all(self.out_fd, root)).items():
                made += root.soname_links(directory, pairs)
            root.write_file("/etc/ld.so.cache", data, 0o644)
            return made
        finally:
            self.abort()

    def abort(self) -> None:
        """Kill ldconfig if it still runs and release everything; safe to call twice."""
        if self.pid:
            pid, self.pid = self.pid, 0
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        if self.mask is not None:
            self.signal.pthread_sigmask(self.signal.SIG_SETMASK, self.mask)
            self.mask = None
        while self.fds:
            os.close(self.fds.pop())
        if self.created:
            self.created = False
            _remove_scratch(self.root, self.scratch)


def _child(root_fd: int, ldconfig_fd: int, argv: list[str], out_fd: int, err_fd: int) -> None:
    """Runs in the forked child; never returns."""
    try:
        import resource

        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.fchdir(root_fd)
        os.chroot(".")
        for limit, value in (
            (resource.RLIMIT_AS, ADDRESS_SPACE_BYTES),
            (resource.RLIMIT_CPU, CPU_SECONDS),
            (resource.RLIMIT_NOFILE, OPEN_FILES),
            (resource.RLIMIT_FSIZE, MAX_CACHE_BYTES),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(limit, (value, value))
        os.setgroups([])
        os.setresgid(UNPRIVILEGED, UNPRIVILEGED, UNPRIVILEGED)
        os.setresuid(UNPRIVILEGED, UNPRIVILEGED, UNPRIVILEGED)
        os.execve(ldconfig_fd, argv, {})
    except OSError as err:
        os.write(2, f"cannot start it: {err.strerror}\n".encode())
    finally:
        os._exit(127)


def run_ldconfig(root: Rootfs, ldconfig_path: str) -> int:
    """Regenerate <rootfs>/etc/ld.so.cache from the rootfs's /etc/ld.so.conf and make the
    SONAME links ldconfig would make; returns how many links were made."""
    return LdconfigRun(root, ldconfig_path).finish()


def _single(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..")


def parse_listing(text: str) -> dict[str, list[tuple[str, str]]]:
    """`ldconfig -v` output -> {directory: [(soname, file), ...]}.

    Directory lines are `DIR:`, `DIR: (from FILE:LINE)` or `DIR: (hwcap: ...)...` (glibc-hwcaps
    subdirectories), link lines `\\tSONAME -> FILE`.
    SONAMEs come from the image's ELF files and may hold anything, a newline included, so a
    line that is not exactly one of these shapes is skipped, and every name must be one path
    component: a forged line can at worst mislink the image's own libraries, which the image
    can do anyway, and never leaves the rootfs (the links are made through its fd walk).
    """
    links: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in text.split("\n"):
        if line.startswith("\t"):
            soname, sep, name = line[1:].partition(" -> ")
            if current is not None and sep and _single(soname) and _single(name):
                current.append((soname, name))
            continue
        cut = line.find(": (")
        if line.startswith("/") and cut > 0 and line.endswith(")"):
            current = links.setdefault(line[:cut], [])
        elif line.startswith("/") and line.endswith(":"):
            current = links.setdefault(line[:-1], [])
        else:
            current = None
    return links


def _exit_reason(code: int) -> str:
    if code >= 0:
        return f"exited with {code}"
    import signal  # imports enum: only on this error path

    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    limits = {"SIGXCPU": f" (over {CPU_SECONDS} s of CPU)", "SIGXFSZ": " (file size limit)"}
    return f"was killed by {name}{limits.get(name, '')}"


def _read_all(fd: int, root: Rootfs) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, MAX_LISTING_BYTES + 1)
    chunks = [data]
    while data and sum(map(len, chunks)) <= MAX_LISTING_BYTES:
        data = os.read(fd, MAX_LISTING_BYTES + 1)
        chunks.append(data)
    text = b"".join(chunks)
    if len(text) > MAX_LISTING_BYTES:
        raise root.error("/etc/ld.so.cache", f"ldconfig listed more than {MAX_LISTING_BYTES} bytes")
    return text.decode("utf-8", "surrogateescape")


def _last_line(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    lines = os.read(fd, 1 << 16).decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


def _remove_scratch(root: Rootfs, scratch: str) -> None:
    # Best effort: a failure here must not hide the error that got us here.
    try:
        fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root.fd)
    except OSError:
        return
    try:
        for name in os.listdir(fd):
            os.unlink(name, dir_fd=fd)
        os.rmdir(scratch, dir_fd=root.fd)
    except OSError:
        pass
    finally:
        os.close(fd)
