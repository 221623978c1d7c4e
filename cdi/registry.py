"""A registry of CDI spec dirs: qualified device name -> device, with the reference's rules.

Dirs are given lowest priority first (default /etc/cdi, then /var/run/cdi: later wins). Only
`*.yaml` and `*.json` regular files (symlinks followed) are read, in lexical order; anything
else by such a name (a FIFO, a device) is reported without being read, so it cannot block a
scan. A file that fails to load is reported and skipped. The same device at the same priority
in two files is a conflict: the device is dropped and both files get an error (even when a
higher-priority dir also defines it, as in the reference).

Every refresh builds a new immutable `Snapshot` and swaps it in with one assignment, so a
reader sees either the old or the new registry, never a mix. With `auto_refresh`, inotify
events (cdi.inotify; one thread) trigger a refresh once the dirs have been quiet
for `debounce` seconds.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import select
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType

import attrs

from cdi.codec import parse_spec
from cdi.errors import SpecError, quote
from cdi.spec import SPEC_FORMATS, Device, Spec

DEFAULT_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
SPEC_EXTENSIONS = tuple(SPEC_FORMATS)


@attrs.frozen
class ResolvedDevice:
    """A device found in the registry, with the spec and file it came from."""

    name: str  # the qualified name, vendor/class=device
    device: Device
    spec: Spec
    path: str
    priority: int


@attrs.frozen
class SpecFile:
    """A spec file that loaded successfully."""

    path: str
    priority: int
    spec: Spec


@attrs.frozen
class Snapshot:
    """One consistent state of the registry; never changes after it is built."""

    devices: Mapping[str, ResolvedDevice]
    specs: tuple[SpecFile, ...]
    errors: Mapping[str, tuple[str, ...]]
    generation: int = 0


EMPTY = Snapshot(MappingProxyType({}), (), MappingProxyType({}))


_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _not_regular(mode: int, path: str) -> OSError | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _FILE_TYPES if test(mode)), "not a file")
    return OSError(errno.EINVAL, f"not a regular file ({kind})", path)


def read_regular_file(path: str) -> bytes:
    """The content of the regular file at `path` (symlinks followed).

    OSError for anything else (strerror says what it is): a FIFO or a device is never
    opened for reading in a way that could block or wait for a writer.
    """
    error = _not_regular(os.stat(path).st_mode, path)
    if error is not None:
        raise error
    # Checked again on what was opened: the name may have been replaced in between.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with open(fd, "rb") as stream:
        error = _not_regular(os.fstat(fd).st_mode, path)
        if error is not None:
            raise error
        return stream.read()


def load_spec_file(path: str) -> Spec:
    """Read (regular files only, see `read_regular_file`), decode and validate a spec file."""
    try:
        data = read_regular_file(path)
    except OSError as error:
        raise SpecError(path, f"cannot read the file: {error.strerror or error}") from None
    return parse_spec(data, path)


def is_spec_file_name(name: str) -> bool:
    """True for names the registry reads (`.yaml`/`.json`, case-sensitive, as the reference)."""
    return name.endswith(SPEC_EXTENSIONS)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector (nests; restores the previous state).

    Loading specs allocates hundreds of thousands of objects that all stay alive, so
    collections during a scan would only rescan them.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# A file's identity for the parse cache: a rename (new inode) or an in-place write (size,
# mtime, ctime) changes it.
_FileKey = tuple[int, int, int, int, int]
ParseCache = dict[str, tuple[_FileKey, Spec | SpecError]]


def _file_key(path: str) -> _FileKey | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def scan(
    spec_dirs: Sequence[str], generation: int = 0, cache: ParseCache | None = None
) -> Snapshot:
    """Load every spec file of `spec_dirs` (lowest priority first) into a new Snapshot.

    With `cache` (path -> file identity and result), files that did not change since the
    last scan are not parsed again; the cache is updated to hold exactly this scan's files.
    """
    with paused_gc():
        return _scan(spec_dirs, generation, cache)


def _scan(spec_dirs: Sequence[str], generation: int, cache: ParseCache | None) -> Snapshot:
    errors: dict[str, list[str]] = {}
    specs: list[SpecFile] = []
    seen: ParseCache = {}

    def load(path: str, priority: int) -> None:
        key = _file_key(path)
        cached = cache.get(path) if cache is not None and key is not None else None
        if cached is not None and cached[0] == key:
            result = cached[1]
        else:
            try:
                result = load_spec_file(path)
            except SpecError as error:
                result = error
            except Exception as error:  # one odd file must never stop the other files
                result = SpecError(path, f"cannot load the spec: {error!r}")
        if key is not None:
            seen[path] = (key, result)
        if isinstance(result, SpecError):
            errors.setdefault(path, []).append(str(result))
        else:
            specs.append(SpecFile(path, priority, result))

    for priority, directory in enumerate(spec_dirs):
        # As the reference's filepath.Walk: the dir itself is not followed if it is a symlink
        # (nor read if it is a file), unless its own name looks like a spec file.
        try:
            if not stat.S_ISDIR(os.lstat(directory).st_mode):
                if is_spec_file_name(directory):
                    load(directory, priority)
                continue
            entries = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        except OSError as error:
            errors.setdefault(directory, []).append(
                f"{directory}: cannot read the spec dir: {error.strerror or error}"
            )
            continue
        for entry in entries:
            if not is_spec_file_name(entry):
                continue
            path = os.path.join(directory, entry)
            # Subdirectories are skipped; anything else (a symlink to a file, and also a
            # dangling one or one to a directory) is read, and fails visibly if it must.
            try:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    continue
            except OSError:
                continue  # vanished while we looked
            load(path, priority)
    if cache is not None:
        cache.clear()
        cache.update(seen)
    devices = _resolve_conflicts(specs, errors)
    return Snapshot(
        MappingProxyType(devices),
        tuple(specs),
        MappingProxyType({path: tuple(messages) for path, messages in errors.items()}),
        generation,
    )


def _resolve_conflicts(
    specs: Iterable[SpecFile], errors: dict[str, list[str]]
) -> dict[str, ResolvedDevice]:
    devices: dict[str, ResolvedDevice] = {}
    conflicts: set[str] = set()
    for spec_file in specs:
        spec = spec_file.spec
        prefix = f"{spec.vendor}/{spec.cls}="
        for device in spec.devices:
            name = prefix + device.name
            old = devices.get(name)
            if old is not None and old.priority >= spec_file.priority:
                if old.priority == spec_file.priority:
                    message = (
                        f"conflicting device {quote(name)}: defined in {quote(spec_file.path)} "
                        f"and {quote(old.path)} at the same priority; the device is dropped"
                    )
                    errors.setdefault(spec_file.path, []).append(message)
                    errors.setdefault(old.path, []).append(message)
                    conflicts.add(name)
                continue
            devices[name] = ResolvedDevice(name, device, spec, spec_file.path, spec_file.priority)
    for name in conflicts:
        del devices[name]
    return devices


class Registry:
    """CDI devices of some spec dirs; `resolve` is one dict lookup on an immutable snapshot."""

    def __init__(
        self,
        spec_dirs: Sequence[str] = DEFAULT_SPEC_DIRS,
        *,
        auto_refresh: bool = False,
        debounce: float = 0.1,
        on_refresh: Callable[[Snapshot], None] | None = None,
    ) -> None:
        if isinstance(spec_dirs, str):
            raise TypeError("spec_dirs is a sequence of directories, not one string")
        self.spec_dirs = tuple(os.path.normpath(directory) for directory in spec_dirs)
        self._snapshot = EMPTY
        self._lock = threading.Lock()  # serialises refreshes, never taken by readers
        self._cache: ParseCache = {}  # only touched under _lock
        self._on_refresh = on_refresh
        self._watcher: _Watcher | None = None
        if auto_refresh:
            # Watch first, then scan: a change in between triggers one more refresh
            # instead of being missed.
            self._watcher = _Watcher(self, debounce)
        self.refresh()

    @property
    def snapshot(self) -> Snapshot:
        """The current state (immutable; keep it to read several things consistently)."""
        return self._snapshot

    @property
    def generation(self) -> int:
        """How many refreshes have completed."""
        return self._snapshot.generation

    def refresh(self) -> dict[str, tuple[str, ...]]:
        """Rescan the spec dirs now and swap the result in; returns the errors per path."""
        with self._lock:
            snapshot = scan(self.spec_dirs, self._snapshot.generation + 1, self._cache)
            self._snapshot = snapshot
        if self._on_refresh is not None:
            self._on_refresh(snapshot)
        return dict(snapshot.errors)

    def resolve(self, name: str) -> ResolvedDevice | None:
        """The device with qualified name `name`, or None."""
        return self._snapshot.devices.get(name)

    def devices(self) -> list[str]:
        """Every qualified device name, sorted."""
        return sorted(self._snapshot.devices)

    def errors(self) -> dict[str, tuple[str, ...]]:
        """Errors of the last refresh, by file (or dir) path."""
        errors = dict(self._snapshot.errors)
        watcher = self._watcher
        if watcher is not None:
            errors.update(watcher.errors())
        return errors

    def close(self) -> None:
        """Stop watching the spec dirs (no-op without auto-refresh)."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Watcher:
    """inotify watches on the spec dirs and one thread that debounces and refreshes."""

    # How often a missing spec dir is checked for (inotify cannot watch what does not exist).
    RETRY_SECONDS = 1.0

    def __init__(self, registry: Registry, debounce: float) -> None:
        from cdi import inotify

        self._registry = registry
        self._debounce = debounce
        try:
            self._inotify = inotify.Inotify()
        except OSError as error:
            raise OSError(
                error.errno,
                f"cannot watch the spec dirs for changes: {error.strerror} (inotify instances "
                "are limited by /proc/sys/fs/inotify/max_user_instances)",
            ) from None
        # writes, creations, removals and renames in the dir; the dir itself going away
        self._mask = (
            inotify.CREATE
            | inotify.DELETE
            | inotify.MODIFY
            | inotify.CLOSE_WRITE
            | inotify.ATTRIB
            | inotify.MOVED_FROM
            | inotify.MOVED_TO
            | inotify.DELETE_SELF
            | inotify.MOVE_SELF
            | inotify.ONLYDIR
        )
        self._is_dir = inotify.ISDIR
        self._gone = inotify.IGNORED  # the kernel dropped the watch (dir removed)
        self._moved = inotify.MOVE_SELF  # the watch would follow the dir to its new name
        self._watches: dict[int, str] = {}  # watch descriptor -> dir
        self._dir_errors: dict[str, tuple[str, ...]] = {}
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopped = False
        self._watch_dirs()
        self._thread = threading.Thread(target=self._run, name="cdi-registry", daemon=True)
        self._thread.start()

    def errors(self) -> dict[str, tuple[str, ...]]:
        return dict(self._dir_errors)

    def _watch_dirs(self) -> bool:
        """Watch every spec dir that exists and is not watched yet; True if any was added."""
        added = False
        watched = set(self._watches.values())
        for directory in self._registry.spec_dirs:
            if directory in watched or not os.path.isdir(directory):
                continue
            try:
                self._watches[self._inotify.add_watch(directory, self._mask)] = directory
            except OSError as error:
                self._set_error(
                    directory,
                    f"{directory}: failed to monitor for changes: {error.strerror or error}",
                )
                continue
            self._set_error(directory, None)
            added = True
        return added

    def _set_error(self, key: str, message: str | None) -> None:
        # Copy on write: readers in other threads copy the dict without a lock.
        errors = dict(self._dir_errors)
        if message is None:
            errors.pop(key, None)
        else:
            errors[key] = (message,)
        self._dir_errors = errors

    def _changed(self) -> bool:
        """Read the pending events; True if one may change what the registry holds."""
        relevant = False
        for event in self._inotify.read():
            if event.mask & (self._gone | self._moved):
                if self._watches.pop(event.wd, None) is not None and event.mask & self._moved:
                    with contextlib.suppress(OSError):
                        self._inotify.rm_watch(event.wd)
                relevant = True
            elif event.mask & self._is_dir or not event.name or is_spec_file_name(event.name):
                relevant = True  # a subdir, the dir itself, a spec file; or a queue overflow
        return relevant

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._inotify.fileno(), select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        due: float | None = None
        while not self._stopped:
            if due is not None:
                timeout: float | None = max(0.0, due - time.monotonic())
            elif len(self._watches) < len(self._registry.spec_dirs):
                timeout = self.RETRY_SECONDS  # poll for spec dirs to appear
            else:
                timeout = None  # inotify reports everything, even a removed dir
            ready = poller.poll(None if timeout is None else timeout * 1000)
            if self._stopped:
                return
            try:
                if ready and self._changed():
                    due = time.monotonic() + self._debounce
                appeared = self._watch_dirs()
                if appeared or (due is not None and time.monotonic() >= due):
                    due = None
                    self._registry.refresh()
                self._set_error("auto-refresh", None)
            except Exception as error:  # the thread must survive whatever a refresh meets
                self._set_error("auto-refresh", f"auto-refresh failed: {error!r}")

    def stop(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")
        self._thread.join(timeout=5)
        self._inotify.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
