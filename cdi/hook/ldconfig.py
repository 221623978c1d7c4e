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
- Unprivileged ldconfig cannot write /etc/ld.so.cache, so it writes into a private scratch
  directory owned by 65534 and given `-X` (no SONAME link updates; create-symlinks makes the
  links). The hook then copies the cache into /etc through the rootfs fd walk and removes the
  scratch directory.
"""

from __future__ import annotations

import os
import stat

from cdi.hook.errors import HookError
from cdi.hook.rootfs import Rootfs

UNPRIVILEGED = 65534  # the conventional "nobody": owns nothing on the host
MAX_CACHE_BYTES = 64 << 20
# A FIFO planted where ldconfig reads (an `include`d file) would block it forever, and with it
# the container start; a real cache rebuild takes milliseconds.
TIMEOUT_SECONDS = 20.0


def _child(root_fd: int, ldconfig_fd: int, argv: list[str], log_fd: int) -> None:
    """Runs in the forked child; never returns."""
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.fchdir(root_fd)
        os.chroot(".")
        os.setgroups([])
        os.setresgid(UNPRIVILEGED, UNPRIVILEGED, UNPRIVILEGED)
        os.setresuid(UNPRIVILEGED, UNPRIVILEGED, UNPRIVILEGED)
        os.execve(ldconfig_fd, argv, {})
    except OSError as err:
        os.write(2, f"cannot start it: {err.strerror}\n".encode())
    finally:
        os._exit(127)


def run_ldconfig(root: Rootfs, ldconfig_path: str) -> None:
    """Regenerate <rootfs>/etc/ld.so.cache from the rootfs's /etc/ld.so.conf."""
    try:
        ldconfig_fd = os.open(ldconfig_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise HookError(f"ldconfig {ldconfig_path} (on the host): {err.strerror}") from None
    # Unpredictable, so an image cannot plant it; removed only if this run created it.
    scratch = f".gpu-cdi-hook-ldcache.{os.urandom(6).hex()}"
    created = False
    fds = [ldconfig_fd]
    try:
        if not stat.S_ISREG(os.fstat(ldconfig_fd).st_mode):
            raise HookError(f"ldconfig {ldconfig_path} (on the host): not a regular file")
        try:
            os.mkdir(scratch, 0o700, dir_fd=root.fd)
            created = True
            os.chown(scratch, UNPRIVILEGED, UNPRIVILEGED, dir_fd=root.fd, follow_symlinks=False)
        except OSError as err:
            raise root.error("/" + scratch, f"cannot create scratch dir: {err.strerror}") from None
        argv = ["ldconfig", "-X", "-C", f"/{scratch}/ld.so.cache", "-f", "/etc/ld.so.conf"]
        # ldconfig's messages go to a memfd, not to our stderr: the runtime shows the hook's
        # stderr as the error, which must stay one line; the last message is quoted in it.
        log_fd = os.memfd_create("ldconfig-output", os.MFD_CLOEXEC)
        fds.append(log_fd)
        pid = os.fork()
        if pid == 0:
            _child(root.fd, ldconfig_fd, argv, log_fd)
        code = _wait(pid, TIMEOUT_SECONDS)
        if code is None:
            raise root.error(
                "/etc/ld.so.cache",
                f"ldconfig {ldconfig_path} did not finish within {TIMEOUT_SECONDS:g} s (killed)",
            )
        if code != 0:
            said = _last_line(log_fd)
            raise root.error(
                "/etc/ld.so.cache",
                f"ldconfig {ldconfig_path} exited with {code}" + (f": {said}" if said else ""),
            )
        data = root.read_file(f"/{scratch}/ld.so.cache", limit=MAX_CACHE_BYTES)
        if data is None:
            raise root.error("/etc/ld.so.cache", f"ldconfig {ldconfig_path} wrote no cache")
        root.write_file("/etc/ld.so.cache", data, 0o644)
    finally:
        for fd in fds:
            os.close(fd)
        if created:
            _remove_scratch(root, scratch)


def _last_line(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    lines = os.read(fd, 1 << 16).decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip() if lines else ""


def _wait(pid: int, timeout: float) -> int | None:
    """Exit code of child `pid`, or None after killing it when `timeout` passed."""
    import select

    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return None
    finally:
        os.close(pidfd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


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
