"""Write spec files atomically: validated, minimal cdiVersion, mode 0644, never half-written.

The temp file is created in the target directory (a rename from elsewhere would not be seen
by the reference library's auto-refresh) under a name the registry ignores, fsynced, renamed
over the target, and the directory is fsynced so the rename survives a crash. On any error
the temp file is removed and the old file stays as it was. A symlink is followed: its target
is replaced, the link stays. Temp files a killed writer left behind are removed by the next
write of the same file (a live writer holds a lock on its own).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

import attrs

from cdi.dump import dump_spec
from cdi.errors import WriteError, quote
from cdi.spec import SPEC_FORMATS, Spec
from cdi.validate import validate_spec
from cdi.version import FLOOR_VERSION, LATEST_VERSION, minimum_version, parse_version, shortfall

FILE_MODE = 0o644


def format_for(path: str) -> str:
    """The format a spec file at `path` must have (`.yaml` or `.json`, as the registry reads)."""
    fmt = SPEC_FORMATS.get(os.path.splitext(path)[1])
    if fmt is None:
        raise WriteError(
            f"{path}: a spec file name must end in .yaml or .json "
            "(CDI registries ignore every other file)"
        )
    return fmt


def with_version(spec: Spec, version: str | None) -> Spec:
    """`spec` with cdiVersion `version`, or the minimum its content needs when None;
    WriteError when `version` is unknown or too old for the content."""
    if version is None:
        return attrs.evolve(spec, version=minimum_version(spec))
    key = parse_version(version)
    if key is None:
        raise WriteError(
            f"cannot write cdiVersion {quote(version)}: not a version the reference "
            f"library 0.8.0 knows ({FLOOR_VERSION} to {LATEST_VERSION})"
        )
    short = shortfall(spec, key)
    if short is not None:
        raise WriteError(f"cannot write cdiVersion {quote(version)}: the content {short}")
    return attrs.evolve(spec, version=version)


def render_spec(spec: Spec, *, fmt: str = "yaml", version: str | None = None) -> str:
    """The text `write_spec` would write: cdiVersion set to `version` or the minimum."""
    spec = with_version(spec, version)
    validate_spec(spec, f"spec {quote(spec.kind)}")
    return dump_spec(spec, fmt)


def write_spec(
    spec: Spec, path: str, *, fmt: str | None = None, version: str | None = None
) -> bool:
    """Validate and atomically write `spec` to `path`; False when the file already had it.

    cdiVersion is the minimum the content needs unless `version` is given; a `version` too
    old for the content is refused (WriteError), as is an invalid spec (SpecError).
    """
    return write_text(path, render_spec(spec, fmt=fmt or format_for(path), version=version))


def check_output(path: str) -> None:
    """WriteError (one line naming `path`) unless `path` can be written as a file: it must not
    end in '/' nor be (or lead by symlinks to) a directory, a device, a FIFO or a socket."""
    if path.endswith("/"):
        raise WriteError(
            f"{path}: names a directory (it ends in '/'): give the file's path, "
            f"e.g. {path}nvidia.yaml"
        )
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return  # it will be created, or the write says which parent is in the way
    except OSError as error:  # a symlink loop, a parent we may not search
        raise WriteError(f"{path}: {error.strerror}") from None
    if not stat.S_ISREG(mode):
        from cdi.files import file_kind

        raise WriteError(f"{path}: is {file_kind(mode)}, not a file: refusing to write there")


def write_text(path: str, text: str) -> bool:
    """Atomically replace `path` with `text`; False (nothing written) when it already holds it."""
    check_output(path)  # before reading it: a FIFO or a device could block
    remove_stale_temps(os.path.realpath(path))
    data = text.encode()
    try:
        with open(path, "rb") as stream:
            if stream.read() == data:
                if stat.S_IMODE(os.fstat(stream.fileno()).st_mode) != FILE_MODE:
                    os.chmod(path, FILE_MODE)  # same content, but readable as promised
                return False
    except OSError:
        pass  # missing or unreadable: (re)write it
    write_atomic(path, data)
    return True


def _temp_name(name: str, entry: str) -> bool:
    """Whether `entry` is named as `write_atomic` names its temp files for the file `name`."""
    prefix = f".{name}."
    middle = entry[len(prefix) : -len(".tmp")]
    return (
        entry.startswith(prefix)
        and entry.endswith(".tmp")
        and len(middle) == 8
        and all(char in "0123456789abcdef" for char in middle)
    )


def remove_stale_temps(path: str) -> None:
    """Remove the temp files of `path` that writers killed mid-write left behind.

    Only names `write_atomic` makes for `path`, and only regular files no live writer holds
    its lock on. Failures are ignored: a leftover temp file harms nothing but the eye.
    """
    directory, name = os.path.split(path)
    try:
        entries = [entry for entry in os.listdir(directory or ".") if _temp_name(name, entry)]
    except OSError:
        return
    for entry in entries:
        temp = os.path.join(directory, entry)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.lockf(fd, os.F_TLOCK, 0)  # fails while its writer lives
                os.unlink(temp)
        except OSError:
            pass
        finally:
            os.close(fd)


def _not_a_directory(directory: str) -> str | None:
    """The first path on the way to `directory` that exists but is not a directory."""
    parts = directory.split(os.sep)
    for end in range(2, len(parts) + 1):
        ancestor = os.sep.join(parts[:end])
        if os.path.lexists(ancestor) and not os.path.isdir(ancestor):
            return ancestor
    return None


def write_atomic(
    path: str,
    data: bytes,
    mode: int = FILE_MODE,
    *,
    what: str = "the spec",
    make_dirs: bool = True,
    owner: tuple[int, int] | None = None,
) -> None:
    """Replace `path` with `data` atomically (temp file in the same dir, fsync, rename); when
    `path` is a symlink, the file it points to is replaced.

    `what` names the file in the error; `make_dirs` creates missing directories; `owner`
    (uid, gid) is given to the new file, e.g. that of the file it replaces.
    """
    target = os.path.realpath(path)
    directory, name = os.path.split(target)
    temp = os.path.join(directory, f".{name}.{os.urandom(4).hex()}.tmp")
    pending = False  # True while a temp file of ours exists
    try:
        if make_dirs:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        pending = True
        try:
            # Held until the rename: remove_stale_temps leaves a locked temp file alone. (One
            # that finds it in the instant before this lock makes this write fail, cleanly.)
            os.lockf(fd, os.F_LOCK, 0)
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)  # the umask must not decide who can read a spec
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
            os.rename(temp, target)
            pending = False
        finally:
            os.close(fd)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as error:
        if pending:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        reason = error.strerror or str(error)
        if error.errno in (errno.EEXIST, errno.ENOTDIR):  # makedirs met a file on the way
            blocker = _not_a_directory(directory)
            if blocker is not None:
                reason = f"{blocker} is not a directory"
        raise WriteError(f"{path}: cannot write {what}: {reason}") from None


def unified_diff(old: str, new: str, fromfile: str, tofile: str) -> str:
    """A unified diff of two texts (`gpu-cdi generate --check`, `configure --dry-run`)."""
    import difflib

    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile, tofile
    )
    return "".join(lines)
