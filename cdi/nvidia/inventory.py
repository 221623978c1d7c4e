"""The Inventory: every fact about a host that a CDI spec is built from, and nothing else.

Discovery (NVML and the file system) produces it; `build` turns it into a spec without touching
the host; `gpu-cdi inventory` prints it and `gpu-cdi generate --inventory FILE` reads it back.
Paths are container paths (the driver or dev root stripped); the roots are kept beside them,
so the host path of anything is `root + path`.

The classes are NamedTuples rather than attrs classes on purpose: `gpu-cdi generate` has a
40 ms budget for the whole process and importing attrs alone costs about 15 ms here.
"""

# Annotations are evaluated (no `from __future__ import annotations`): a NamedTuple's string
# annotations are each compiled at class creation, on every `gpu-cdi` start.
from collections.abc import Mapping
from typing import Any, NamedTuple

from cdi.errors import describe

# Format 2 ends with `end: true`: a file cut short (a full disk, a killed writer) is refused
# instead of read as a host with fewer GPUs or files.
FORMAT = 2
FILE_KINDS = ("binary", "firmware", "ipc", "config", "graphics", "xorg")


class InventoryError(ValueError):
    """An inventory file is unreadable or does not describe a host; says which field."""


class Node(NamedTuple):
    """A character device under the dev root, as stat saw it."""

    path: str
    major: int
    minor: int
    mode: int
    gid: int = 0


class Link(NamedTuple):
    """A symlink on the host: `path` points to `target` (as readlink returns it)."""

    path: str
    target: str


class MigDevice(NamedTuple):
    """A MIG device; `mig_index` is its handle index on the parent GPU."""

    mig_index: int
    uuid: str
    gi: int
    ci: int
    profile: str = ""
    caps: tuple[str, ...] = ()


class Gpu(NamedTuple):
    """A GPU as NVML enumerates it; `error` is set when NVML reports it lost or failing."""

    nvml_index: int
    uuid: str
    pci: str
    minor: int
    name: str = ""
    mig_enabled: bool = False
    migs: tuple[MigDevice, ...] = ()
    drm: tuple[str, ...] = ()
    by_path: tuple[Link, ...] = ()
    error: str = ""


class Library(NamedTuple):
    """A driver library (`*.so.<driver version>`) and the symlink names beside it on the host."""

    path: str
    soname: str
    links: tuple[str, ...] = ()


class File(NamedTuple):
    """A driver file to mount: `path` under the driver root, `container_path` in containers."""

    kind: str
    path: str
    container_path: str


class Inventory(NamedTuple):
    """Everything the spec builder needs to know about one host."""

    driver_version: str
    driver_root: str = "/"
    dev_root: str = "/"
    gpus: tuple[Gpu, ...] = ()
    nodes: tuple[Node, ...] = ()
    libraries: tuple[Library, ...] = ()
    library_dirs: tuple[str, ...] = ()
    files: tuple[File, ...] = ()

    def node(self, path: str) -> Node | None:
        """The device node at container path `path`, if the host has it."""
        for node in self.nodes:
            if node.path == path:
                return node
        return None


# ------------------------------------------------------------------------------ to and from data


def _mig_data(mig: MigDevice) -> dict[str, Any]:
    return {
        "index": mig.mig_index,
        "uuid": mig.uuid,
        "gi": mig.gi,
        "ci": mig.ci,
        "profile": mig.profile,
        "caps": list(mig.caps),
    }


def _gpu_data(gpu: Gpu) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": gpu.nvml_index,
        "uuid": gpu.uuid,
        "pci": gpu.pci,
        "minor": gpu.minor,
        "name": gpu.name,
        "migEnabled": gpu.mig_enabled,
    }
    if gpu.migs:
        out["migs"] = [_mig_data(mig) for mig in gpu.migs]
    out["drm"] = list(gpu.drm)
    out["byPath"] = [{"path": link.path, "target": link.target} for link in gpu.by_path]
    if gpu.error:
        out["error"] = gpu.error
    return out


def to_data(inventory: Inventory) -> dict[str, Any]:
    """The inventory as plain data (what `gpu-cdi inventory` prints as YAML)."""
    return {
        "inventory": FORMAT,
        "driverVersion": inventory.driver_version,
        "driverRoot": inventory.driver_root,
        "devRoot": inventory.dev_root,
        "gpus": [_gpu_data(gpu) for gpu in inventory.gpus],
        "nodes": [
            {
                "path": n.path,
                "major": n.major,
                "minor": n.minor,
                "mode": f"{n.mode:04o}",
                "gid": n.gid,
            }
            for n in inventory.nodes
        ],
        "libraryDirs": list(inventory.library_dirs),
        "libraries": [
            {"path": lib.path, "soname": lib.soname, "links": list(lib.links)}
            for lib in inventory.libraries
        ],
        "files": [
            {"kind": f.kind, "path": f.path, "containerPath": f.container_path}
            for f in inventory.files
        ],
        "end": True,  # last: see FORMAT
    }


class _Reader:
    """Typed access to one mapping of an inventory file; errors name the field's full path."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            raise InventoryError(f"{where}: expected a mapping, got {describe(data)}")
        self.data: Mapping[str, Any] = data
        self.where = where
        self.seen: set[str] = set()

    def _get(self, key: str, default: object) -> object:
        self.seen.add(key)
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            raise InventoryError(f"{self.where}: missing field {key!r}")
        return default

    def text(self, key: str, default: object = None) -> str:
        value = self._get(key, _REQUIRED if default is None else default)
        if type(value) is not str:
            raise InventoryError(f"{self.where}.{key}: expected a string, got {describe(value)}")
        return value

    def number(self, key: str, default: object = None) -> int:
        value = self._get(key, _REQUIRED if default is None else default)
        if type(value) is not int or value < 0:
            raise InventoryError(
                f"{self.where}.{key}: expected a non-negative integer, got {describe(value)}"
            )
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if getattr(value, "kind", None) == "boolean":  # cdi.yaml11's typed YAML 1.1 scalar
            value = getattr(value, "value", value)
        if type(value) is not bool:
            raise InventoryError(
                f"{self.where}.{key}: expected true or false, got {describe(value)}"
            )
        return value

    def items(self, key: str) -> list[object]:
        value = self._get(key, [])
        if not isinstance(value, list):
            raise InventoryError(f"{self.where}.{key}: expected a list, got {describe(value)}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.items(key)
        for i, item in enumerate(values):
            if type(item) is not str:
                raise InventoryError(
                    f"{self.where}.{key}[{i}]: expected a string, got {describe(item)}"
                )
        return tuple(values)  # type: ignore[arg-type]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise InventoryError(f"{self.where}: unknown field {unknown[0]!r}")


_REQUIRED = object()


def _mode(reader: _Reader) -> int:
    value = reader._get("mode", _REQUIRED)
    if type(value) is int:  # YAML reads a plain 0666 as the number 438
        raise InventoryError(
            f'{reader.where}.mode: expected octal permission bits as a string such as "0666", '
            f"got integer {value} (quote the digits)"
        )
    text = reader.text("mode")
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise InventoryError(f"{reader.where}.mode: expected octal permission bits, got {text!r}")
    return mode


def _absolute(reader: _Reader, key: str) -> str:
    value = reader.text(key)
    if not value.startswith("/"):
        raise InventoryError(f"{reader.where}.{key}: expected an absolute path, got {value!r}")
    return value


def _mig(data: object, where: str) -> MigDevice:
    r = _Reader(data, where)
    mig = MigDevice(
        mig_index=r.number("index"),
        uuid=r.text("uuid"),
        gi=r.number("gi"),
        ci=r.number("ci"),
        profile=r.text("profile", ""),
        caps=r.strings("caps"),
    )
    r.done()
    return mig


def _gpu(data: object, where: str) -> Gpu:
    r = _Reader(data, where)
    links = []
    for i, item in enumerate(r.items("byPath")):
        lr = _Reader(item, f"{where}.byPath[{i}]")
        links.append(Link(_absolute(lr, "path"), lr.text("target")))
        lr.done()
    gpu = Gpu(
        nvml_index=r.number("index"),
        uuid=r.text("uuid"),
        pci=r.text("pci"),
        minor=r.number("minor"),
        name=r.text("name", ""),
        mig_enabled=r.flag("migEnabled", False),
        migs=tuple(_mig(m, f"{where}.migs[{i}]") for i, m in enumerate(r.items("migs"))),
        drm=r.strings("drm"),
        by_path=tuple(links),
        error=r.text("error", ""),
    )
    r.done()
    return gpu


def from_data(data: object, source: str) -> Inventory:
    """An Inventory from plain data; InventoryError names `source` and the bad field."""
    try:
        r = _Reader(data, "inventory")
        version = r.number("inventory")
        if version != FORMAT:
            raise InventoryError(
                f"inventory: format {version} is not supported (only {FORMAT}): "
                "write it again with this version's gpu-cdi inventory"
            )
        # Before any other field: what a file cut short lacks is a symptom, not the story.
        if "end" not in r.data:
            raise InventoryError(
                "inventory: no 'end: true' at the end: the file is cut short "
                "(written partly or truncated); write it again with gpu-cdi inventory"
            )
        if not r.flag("end", False):
            raise InventoryError("inventory.end: expected true (is the file cut short?)")
        nodes = []
        for i, item in enumerate(r.items("nodes")):
            nr = _Reader(item, f"nodes[{i}]")
            path, major, minor = _absolute(nr, "path"), nr.number("major"), nr.number("minor")
            nodes.append(Node(path, major, minor, _mode(nr), nr.number("gid", 0)))
            nr.done()
        libraries = []
        for i, item in enumerate(r.items("libraries")):
            lr = _Reader(item, f"libraries[{i}]")
            libraries.append(Library(_absolute(lr, "path"), lr.text("soname"), lr.strings("links")))
            lr.done()
        files = []
        for i, item in enumerate(r.items("files")):
            fr = _Reader(item, f"files[{i}]")
            kind = fr.text("kind")
            if kind not in FILE_KINDS:
                raise InventoryError(
                    f"files[{i}].kind: {kind!r} is not one of {', '.join(FILE_KINDS)}"
                )
            files.append(File(kind, _absolute(fr, "path"), _absolute(fr, "containerPath")))
            fr.done()
        inventory = Inventory(
            driver_version=r.text("driverVersion"),
            driver_root=_absolute(r, "driverRoot"),
            dev_root=_absolute(r, "devRoot"),
            gpus=tuple(_gpu(g, f"gpus[{i}]") for i, g in enumerate(r.items("gpus"))),
            nodes=tuple(nodes),
            libraries=tuple(libraries),
            library_dirs=r.strings("libraryDirs"),
            files=tuple(files),
        )
        r.done()
    except InventoryError as error:
        raise InventoryError(f"{source}: {error}") from None
    return inventory


def dump(inventory: Inventory) -> str:
    """The inventory as YAML text."""
    from cdi.dump import dump_data

    return dump_data(to_data(inventory), "yaml")


def load(path: str) -> Inventory:
    """Read an inventory file (YAML or JSON); InventoryError says what is wrong and where."""
    from cdi.files import read_regular_file
    from cdi.yaml11 import YamlError, load_yaml

    try:
        raw = read_regular_file(path)
    except OSError as error:
        raise InventoryError(f"{path}: cannot read the inventory: {error.strerror}") from None
    try:
        data = load_yaml(raw)
    except YamlError as error:
        raise InventoryError(f"{path}: not a YAML inventory: {error}") from None
    return from_data(data, path)
