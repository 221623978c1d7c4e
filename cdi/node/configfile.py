"""Editing a runtime's config file the way an operator would: read, change only what is needed,
show the diff (--dry-run) or write it back atomically with a backup of the old file.

A runtime module turns the old text into the new one (`Edit`); this module does the I/O. The
new file keeps the old one's mode and owner; a symlinked config is edited where it points. If
anything fails, the old file is left as it was and no backup is left behind.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import NamedTuple, TextIO

NEW_FILE_MODE = 0o644


class ConfigError(Exception):
    """A config that cannot be read, understood or written; the message is one line."""


class Edit(NamedTuple):
    """What configuring a runtime does to its config: the new text, one phrase per change, and
    one line per thing the user should know (e.g. a setting we will not change)."""

    text: str
    changes: tuple[str, ...]
    notes: tuple[str, ...] = ()


def read(path: str) -> str | None:
    """The config's text, None when there is no file yet; ConfigError when unreadable."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: byte {error.start} is not UTF-8: not a config file gpu-cdi can edit"
        ) from None


def merged_dirs(
    current: Sequence[str] | None, wanted: Sequence[str]
) -> tuple[list[str], str] | None:
    """The spec-dir list that adds `wanted` to what the runtime reads now (`current`, or when
    unset the CDI library's default, which containerd and Docker both keep), and the added dirs
    as a phrase; None when it reads them all already. Later dirs take precedence in both, so
    added dirs go last and existing ones keep their order."""
    from cdi.registry import DEFAULT_SPEC_DIRS

    reads = list(DEFAULT_SPEC_DIRS if current is None else current)
    missing = [d for d in dict.fromkeys(wanted) if d not in reads]
    return (reads + missing, ", ".join(missing)) if missing else None


def _backup_path(path: str) -> str:
    import time

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    candidate = f"{path}.bak-{stamp}"
    number = 1
    while os.path.lexists(candidate):
        number += 1
        candidate = f"{path}.bak-{stamp}.{number}"
    return candidate


def write(path: str, old: str | None, new: str) -> str | None:
    """Back up `old` beside `path` and replace `path` with `new`; returns the backup's path."""
    from cdi.errors import WriteError
    from cdi.writer import write_atomic

    real = os.path.realpath(path)
    if not os.path.isdir(os.path.dirname(real)):
        raise ConfigError(f"{path}: no directory {os.path.dirname(real)}; nothing written")
    mode, owner = NEW_FILE_MODE, None
    if old is not None:
        info = os.stat(real)
        mode, owner = stat.S_IMODE(info.st_mode), (info.st_uid, info.st_gid)
    backup = None
    try:
        if old is not None:
            backup = _backup_path(real)
            write_atomic(backup, old.encode(), mode, what="a backup", make_dirs=False, owner=owner)
        write_atomic(real, new.encode(), mode, what="it", make_dirs=False, owner=owner)
    except WriteError as error:
        if backup is not None and os.path.exists(backup):
            os.unlink(backup)
        raise ConfigError(str(error)) from None
    return backup


def apply(
    path: str, old: str | None, edit: Edit, dry_run: bool, restart: str, out: TextIO, err: TextIO
) -> int:
    """Show or write `edit` of the config at `path`; returns the exit code."""
    for note in edit.notes:
        err.write(note + "\n")
    if edit.text == (old or "") and old is not None:
        err.write(f"{path}: already configured, not rewritten\n")
        return 0
    what = "; ".join(edit.changes)
    if dry_run:
        from cdi.writer import unified_diff

        out.write(unified_diff(old or "", edit.text, path, f"{path} (configured)"))
        err.write(f"{path}: dry run, nothing written; it would get: {what}\n")
        return 0
    backup = write(path, old, edit.text)
    kept = f" (the old file is {backup})" if backup else " (new file)"
    err.write(f"{path}: {what}{kept}; {restart} to apply\n")
    return 0
