"""A registry of CDI spec dirs: qualified device name -> device, with the reference's rules.

Dirs are given lowest priority first (default /etc/cdi, then /var/run/cdi: later wins). Only
`*.yaml` and `*.json` regular files (symlinks followed) are read, in lexical order. A file
that fails to load is reported and skipped. The same device at the same priority in two
files is a conflict: the device is dropped and both files get an error (even when a
higher-priority dir also defines it, as in the reference).

Every refresh builds a new immutable `Snapshot` and swaps it in with one assignment, so a
reader sees either the old or the new registry, never a mix. With `auto_refresh`, inotify
(watchdog) events trigger a refresh once the dirs have been quiet for `debounce` seconds.
"""

from __future__ import annotations

import contextlib
import gc
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs

from cdi.codec import load_spec
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
                result = load_spec(path)
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
    """inotify watches on the spec dirs plus one thread that debounces and refreshes."""

    # How often a missing spec dir is checked for (inotify cannot watch what does not exist).
    RETRY_SECONDS = 1.0

    def __init__(self, registry: Registry, debounce: float) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self._registry = registry
        self._debounce = debounce
        self._wake = threading.Condition()
        self._due: float | None = None
        self._stopped = False
        self._watches: dict[str, Any] = {}
        self._dir_errors: dict[str, tuple[str, ...]] = {}
        watcher = self

        class Handler(FileSystemEventHandler):  # type: ignore[misc]
            def on_any_event(self, event: Any) -> None:
                watcher._event(event)

        self._handler = Handler()
        self._observer = Observer()
        self._observer.daemon = True
        self._watch_dirs()
        self._observer.start()
        self._thread = threading.Thread(target=self._run, name="cdi-registry", daemon=True)
        self._thread.start()

    def errors(self) -> dict[str, tuple[str, ...]]:
        return dict(self._dir_errors)

    def _watch_dirs(self) -> bool:
        """Watch every spec dir that exists and is not watched yet; True if any was added."""
        added = False
        for directory in self._registry.spec_dirs:
            if directory in self._watches or not os.path.isdir(directory):
                continue
            try:
                self._watches[directory] = self._observer.schedule(
                    self._handler, directory, recursive=False
                )
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

    def _drop_missing_watches(self) -> None:
        for directory, watch in list(self._watches.items()):
            if not os.path.isdir(directory):
                del self._watches[directory]
                with contextlib.suppress(KeyError, OSError):  # it died with its directory
                    self._observer.unschedule(watch)

    def _event(self, event: Any) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (our own refresh included) change nothing
        paths = (event.src_path, getattr(event, "dest_path", ""))
        relevant = event.is_directory or any(
            is_spec_file_name(os.fsdecode(path)) for path in paths if path
        )
        if relevant:
            with self._wake:
                self._due = time.monotonic() + self._debounce
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped:
                    now = time.monotonic()
                    if self._due is not None and now >= self._due:
                        break
                    timeout: float | None
                    if self._due is not None:
                        timeout = self._due - now
                    elif len(self._watches) < len(self._registry.spec_dirs):
                        timeout = self.RETRY_SECONDS  # poll for spec dirs to appear
                    else:
                        timeout = None  # inotify reports everything, even a removed dir
                    if self._wake.wait(timeout) is False and self._due is None:
                        break  # periodic check for spec dirs that appeared
                if self._stopped:
                    return
                due, self._due = self._due, None
            try:
                self._drop_missing_watches()
                appeared = self._watch_dirs()
                if due is not None or appeared:
                    self._registry.refresh()
                self._set_error("auto-refresh", None)
            except Exception as error:  # the thread must survive whatever a refresh meets
                self._set_error("auto-refresh", f"auto-refresh failed: {error!r}")

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._observer.stop()
        self._observer.join(timeout=5)
        self._thread.join(timeout=5)
