"""Write spec files atomically: validated, minimal cdiVersion, mode 0644, never half-written.

The temp file is created in the target directory (a rename from elsewhere would not be seen
by the reference library's auto-refresh) under a name the registry ignores, fsynced, renamed
over the target, and the directory is fsynced so the rename survives a crash. On any error
the temp file is removed and the old file stays as it was.
"""

from __future__ import annotations

import contextlib
import os
import stat

import attrs

from cdi.dump import dump_spec
from cdi.errors import WriteError, quote
from cdi.spec import SPEC_FORMATS, Spec
from cdi.validate import validate_spec
from cdi.version import (
    FLOOR_VERSION,
    KNOWN_VERSIONS,
    LATEST_VERSION,
    minimum_requirement,
    parse_version,
)

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
        return attrs.evolve(spec, version=minimum_requirement(spec)[0])
    key = parse_version(version)
    if key is None:
        raise WriteError(
            f"cannot write cdiVersion {quote(version)}: not a version the reference "
            f"library 0.8.0 knows ({FLOOR_VERSION} to {LATEST_VERSION})"
        )
    required, why = minimum_requirement(spec)
    if key < KNOWN_VERSIONS[required]:
        raise WriteError(
            f"cannot write cdiVersion {quote(version)}: the content needs at least "
            f"{required} ({why} needs it)"
        )
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


def write_text(path: str, text: str) -> bool:
    """Atomically replace `path` with `text`; False (nothing written) when it already holds it."""
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


def write_atomic(path: str, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace `path` with `data` atomically (temp file in the same dir, fsync, rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    temp = os.path.join(directory, f".{os.path.basename(path)}.{os.urandom(4).hex()}.tmp")
    pending = False  # True while a temp file of ours exists
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        pending = True
        try:
            os.fchmod(fd, mode)  # the umask must not decide who can read a spec
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, path)
        pending = False
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as error:
        if pending:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        raise WriteError(f"{path}: cannot write the spec: {error.strerror or error}") from None
