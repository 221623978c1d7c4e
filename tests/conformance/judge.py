"""Python face of the reference CDI library (the Go program built by tests/conformance/build.sh).

The runner `cdi-reference` wraps the reference Go library
`tags.cncf.io/container-device-interface` exactly as Debian trixie packages it (0.8.0, the code
inside trixie's containerd 1.7 and podman 5.4). Every verdict returned here is the library's;
this module only runs the program and decodes its JSON.

Typical use in a test (the `reference` fixture of tests/conformance/fixtures.py):

    verdicts = reference.validate([path])          # {path: Verdict}
    assert verdicts[path].ok, verdicts[path].error
    listing = reference.list([etc_dir, run_dir])   # Listing: devices, sources, errors
    oci_out = reference.inject([spec_dir], oci, ["nvidia.com/gpu=0"])  # dict, or raises
    result = reference.try_inject([spec_dir], oci, devices)  # InjectResult, never raises
    same = reference.normalize(ours) == oci_out

Also: `edits(dirs, devices)` (merged CDI edits), `min_version(s)`, `parse_name(s)`,
`parse_annotations`, `annotation_key`, `yaml_types` (go-yaml v2's typing of every scalar),
`version()`. Paths in results are as the library reports them (`filepath.Clean`).

`find_binary()` / `reference()` locate the built program; `reference()` raises
`ReferenceUnavailable` if it was not built (run `bash tests/conformance/build.sh`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = Path(__file__).resolve().parent / "build.sh"
_TIMEOUT = 60


class ReferenceUnavailable(RuntimeError):
    """The reference runner is not built (or cannot run) on this machine."""


class ReferenceFailure(RuntimeError):
    """The runner itself failed (usage error, crash): a harness bug, not a library verdict."""


class ReferenceInjectError(Exception):
    """The reference library refused the injection; `message` is its error text."""

    def __init__(self, message: str, unresolved: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.unresolved = unresolved


@attrs.frozen
class Verdict:
    """The reference verdict on one spec file (strict loader `cdi.ReadSpec`, as containerd uses it).

    `ok` is the loader's verdict; `panic` is True when the library crashed on the file (0.8.0
    panics on one-character vendor/class names), then `ok` is False and `error` says so.
    `schema_error` is filled only by `validate(..., schema=True)`: the library's JSON schema,
    which containerd does not apply; it never changes `ok`. `spec` (when ok) is the decoded
    spec as the library holds it, as JSON with the CDI keys and Go's omitempty applied.
    """

    ok: bool
    error: str | None = None
    panic: bool = False
    schema_error: str | None = None
    kind: str | None = None
    version: str | None = None
    minimum_version: str | None = None
    devices: tuple[str, ...] = ()
    spec: Mapping[str, Any] | None = attrs.field(default=None, eq=False)


@attrs.frozen
class ListedDevice:
    """A device the reference cache resolves, with the spec file it comes from."""

    name: str
    spec: str
    priority: int


_CONFLICT = re.compile(
    r'^conflicting device "(?P<device>[^"]*)" \(specs "(?P<a>[^"]*)", "(?P<b>[^"]*)"\)$'
)


@attrs.frozen
class Listing:
    """What the reference cache makes of a list of spec dirs (later dir = higher priority).

    `devices` maps qualified name -> ListedDevice; `errors` maps spec file path -> the
    library's error messages for it (load errors and conflicts); `dir_errors` maps dir ->
    error. Paths are as the library reports them (`filepath.Clean` of dir + file name).
    """

    spec_dirs: tuple[str, ...]
    devices: Mapping[str, ListedDevice]
    errors: Mapping[str, tuple[str, ...]]
    dir_errors: Mapping[str, str]
    vendors: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()

    def conflicts(self) -> dict[str, frozenset[str]]:
        """Device name -> the spec files that conflict on it (devices dropped for conflicts)."""
        found: dict[str, set[str]] = {}
        for messages in self.errors.values():
            for message in messages:
                match = _CONFLICT.match(message)
                if match:
                    found.setdefault(match["device"], set()).update((match["a"], match["b"]))
        return {name: frozenset(paths) for name, paths in found.items()}

    def load_errors(self) -> dict[str, tuple[str, ...]]:
        """Spec file -> its load (parse/validation) errors, conflicts left out."""
        out: dict[str, tuple[str, ...]] = {}
        for path, messages in self.errors.items():
            loads = tuple(m for m in messages if not _CONFLICT.match(m))
            if loads:
                out[path] = loads
        return out


@attrs.frozen
class InjectResult:
    """Outcome of `Cache.InjectDevices`: `spec` (the edited OCI spec) when `ok`, else `error`.

    `devices` is the device list handed to the library (request, then annotation devices).
    `cache_errors` are the cache's (non-fatal, as in containerd) errors per spec file.
    """

    ok: bool
    devices: tuple[str, ...]
    spec: dict[str, Any] | None = None
    error: str | None = None
    unresolved: tuple[str, ...] = ()
    panic: bool = False
    cache_errors: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)


@attrs.frozen
class NameResult:
    """`parser.ParseQualifiedName` of one name."""

    ok: bool
    vendor: str
    cls: str
    device: str
    error: str | None = None
    panic: bool = False


@attrs.frozen
class AnnotationsResult:
    """`cdi.ParseAnnotations` of a whole annotation map (one bad value fails all of it).

    `devices` maps each `cdi.k8s.io/` key (sorted) to its devices in order.
    """

    ok: bool
    keys: tuple[str, ...] = ()
    devices: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    error: str | None = None
    panic: bool = False


def cache_dir() -> Path:
    """Where build.sh puts its output: $GPU_CDI_CACHE or <repo>/.cache, + /conformance."""
    root = os.environ.get("GPU_CDI_CACHE")
    return (Path(root) if root else REPO / ".cache") / "conformance"


def find_binary() -> Path | None:
    """The built runner, or None if build.sh has not produced it."""
    path = cache_dir() / "cdi-reference"
    return path if os.access(path, os.X_OK) else None


def build(timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run build.sh (a no-op taking milliseconds when already up to date)."""
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Reference:
    """Calls into the reference CDI library through the `cdi-reference` runner."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def _run(self, *args: str, stdin: str | None = None) -> Any:
        proc = subprocess.run(
            [str(self.binary), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            command = " ".join((self.binary.name, *args))
            raise ReferenceFailure(f"{command} exited {proc.returncode}: {proc.stderr.strip()}")
        return json.loads(proc.stdout)

    def version(self) -> dict[str, str]:
        """{"harness", "library" (Debian version, e.g. 0.8.0-5), "specVersion"}."""
        result: dict[str, str] = self._run("version")
        return result

    def validate(
        self, paths: Iterable[str | os.PathLike[str]], *, schema: bool = False
    ) -> dict[str, Verdict]:
        """Load each file with the strict loader; {str(path): Verdict} in the given order.

        With `schema=True` the library's builtin JSON schema is also applied (Verdict.schema_error).
        """
        files = [str(p) for p in paths]
        if not files:
            return {}
        raw = self._run("validate", *(["--schema"] if schema else []), "--", *files)
        return {
            item["file"]: Verdict(
                ok=item["ok"],
                error=item.get("error"),
                panic=item.get("panic", False),
                schema_error=item.get("schemaError"),
                kind=item.get("kind"),
                version=item.get("cdiVersion"),
                minimum_version=item.get("minimumVersion"),
                devices=tuple(item.get("devices") or ()),
                spec=item.get("spec"),
            )
            for item in raw
        }

    def min_version(self, path: str | os.PathLike[str]) -> str:
        """`MinimumRequiredVersion` of the strictly decoded (not validated) spec file.

        Raises ValueError with the library's message if the file cannot be decoded.
        """
        (item,) = self._run("min-version", "--", str(path))
        if not item["ok"]:
            raise ValueError(item["error"])
        version: str = item["minimumVersion"]
        return version

    def min_versions(self, paths: Iterable[str | os.PathLike[str]]) -> dict[str, str | None]:
        """min_version of many files in one call: {str(path): version, or None when the file
        cannot be decoded}."""
        files = [str(p) for p in paths]
        if not files:
            return {}
        return {
            item["file"]: item["minimumVersion"] if item["ok"] else None
            for item in self._run("min-version", "--", *files)
        }

    def list(self, dirs: Sequence[str | os.PathLike[str]]) -> Listing:
        """Scan spec dirs like containerd's CDI cache (priority = position, last wins)."""
        raw = self._run("list", "--", *(str(d) for d in dirs))
        if not raw["ok"]:
            raise ReferenceFailure(f"list failed: {raw.get('error')}")
        return Listing(
            spec_dirs=tuple(raw["specDirs"]),
            devices={
                d["name"]: ListedDevice(d["name"], d["spec"], d["priority"]) for d in raw["devices"]
            },
            errors={path: tuple(msgs) for path, msgs in raw["errors"].items()},
            dir_errors=dict(raw["dirErrors"]),
            vendors=tuple(raw["vendors"]),
            classes=tuple(raw["classes"]),
        )

    def try_inject(
        self,
        spec_dirs: Sequence[str | os.PathLike[str]],
        oci: Mapping[str, Any] | None,
        devices: Sequence[str],
        annotations: Mapping[str, str] | None = None,
    ) -> InjectResult:
        """`Cache.InjectDevices(oci, devices...)` on a fresh cache of `spec_dirs`.

        `devices` are passed verbatim (duplicates included, as a direct library caller would);
        devices named by `cdi.k8s.io/` `annotations` (keys in sorted order) follow, minus those
        already requested, as containerd's CRI adds them. `oci` None means an empty spec.
        """
        args = ["inject"]
        for d in spec_dirs:
            args += ["--spec-dir", str(d)]
        for key, value in (annotations or {}).items():
            args += ["--annotation", f"{key}={value}"]
        stdin = None
        if oci is not None:
            args += ["--oci", "-"]
            stdin = json.dumps(oci)
        raw = self._run(*args, "--", *devices, stdin=stdin)
        return InjectResult(
            ok=raw["ok"],
            devices=tuple(raw.get("devices") or ()),
            spec=raw.get("spec"),
            error=raw.get("error"),
            unresolved=tuple(raw.get("unresolved") or ()),
            panic=raw.get("panic", False),
            cache_errors={k: tuple(v) for k, v in (raw.get("cacheErrors") or {}).items()},
        )

    def inject(
        self,
        spec_dirs: Sequence[str | os.PathLike[str]],
        oci: Mapping[str, Any] | None,
        devices: Sequence[str],
        annotations: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Like try_inject, but returns the edited OCI spec or raises ReferenceInjectError."""
        result = self.try_inject(spec_dirs, oci, devices, annotations)
        if not result.ok or result.spec is None:
            raise ReferenceInjectError(result.error or "injection failed", result.unresolved)
        return result.spec

    def edits(
        self,
        spec_dirs: Sequence[str | os.PathLike[str]],
        devices: Sequence[str],
        annotations: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The merged CDI containerEdits InjectDevices would apply (CDI JSON keys).

        Raises ReferenceInjectError if a device does not resolve.
        """
        args = ["edits"]
        for d in spec_dirs:
            args += ["--spec-dir", str(d)]
        for key, value in (annotations or {}).items():
            args += ["--annotation", f"{key}={value}"]
        raw = self._run(*args, "--", *devices)
        if not raw["ok"]:
            raise ReferenceInjectError(raw.get("error", "edits failed"))
        edits: dict[str, Any] = raw["containerEdits"]
        return edits

    def normalize(self, oci: Mapping[str, Any]) -> dict[str, Any]:
        """Round-trip an OCI spec through the runtime-spec Go types (as inject's output is).

        Unknown fields and empty values (omitempty) disappear, so `normalize(ours)` can be
        compared with the reference's inject output with ==.
        """
        result: dict[str, Any] = self._run("normalize", "--oci", "-", stdin=json.dumps(oci))
        if result.get("ok") is False and "error" in result:
            raise ValueError(result["error"])
        return result

    def parse_names(self, names: Sequence[str]) -> dict[str, NameResult]:
        """`parser.ParseQualifiedName` of each name (vendor/class=name), in one call."""
        if not names:
            return {}
        return {
            item["name"]: NameResult(
                ok=item["ok"],
                vendor=item["vendor"],
                cls=item["class"],
                device=item["device"],
                error=item.get("error"),
                panic=item.get("panic", False),
            )
            for item in self._run("parse-name", "--", *names)
        }

    def parse_name(self, name: str) -> NameResult:
        """`parser.ParseQualifiedName(name)` (vendor/class=name)."""
        return self.parse_names([name])[name]

    def parse_annotations(self, annotations: Mapping[str, str]) -> AnnotationsResult:
        """`cdi.ParseAnnotations` of the whole map."""
        raw = self._run("parse-annotations", "--", *(f"{k}={v}" for k, v in annotations.items()))
        return AnnotationsResult(
            ok=raw["ok"],
            keys=tuple(raw["keys"]),
            devices={k: tuple(v or ()) for k, v in raw["devices"].items()},
            error=raw.get("error"),
            panic=raw.get("panic", False),
        )

    def yaml_types(self, paths: Iterable[str | os.PathLike[str]]) -> dict[str, Any]:
        """How go-yaml v2 (the reference's YAML 1.1 decoder) types the first document of each
        file: {str(path): document}, mappings and lists as such, every scalar as
        {"type": Go type, "value": text} (string, int, int64, uint64, float64, bool, <nil>);
        the document is None when go-yaml refuses the file."""
        files = [str(p) for p in paths]
        if not files:
            return {}
        return {
            item["file"]: item.get("document") if item["ok"] else None
            for item in self._run("yaml-types", "--", *files)
        }

    def annotation_key(
        self, plugin: str, device_id: str, devices: Sequence[str] = ()
    ) -> tuple[str, str]:
        """`cdi.UpdateAnnotations(nil, plugin, device_id, devices)`: (key, value).

        Raises ValueError with the library's message when the library refuses.
        """
        raw = self._run("annotation-key", plugin, device_id, *devices)
        if not raw["ok"]:
            raise ValueError(raw["error"])
        return raw["key"], raw.get("value", "")


def reference() -> Reference:
    """The reference runner, built by build.sh; raises ReferenceUnavailable if not built."""
    binary = find_binary()
    if binary is None:
        raise ReferenceUnavailable(
            f"{cache_dir() / 'cdi-reference'} is missing: run `bash tests/conformance/build.sh`"
        )
    return Reference(binary)
