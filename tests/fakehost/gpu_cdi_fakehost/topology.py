"""Topology model and loader: the YAML format of specs/topology-format.md, strictly validated."""

from __future__ import annotations

import os
import re
import stat
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import yaml

from gpu_cdi_fakehost.catalog import (
    ARCHITECTURES,
    MIB,
    MIG_COMPUTE_INSTANCE_IDS,
    MIG_GPU_INSTANCE_IDS,
    MODELS,
    NVML_ERRORS,
    GiProfile,
    Model,
)

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_BDF_RE = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{4}|[0-9a-fA-F]{8}):)?(?P<bus>[0-9a-fA-F]{2}):"
    r"(?P<device>[0-1][0-9a-fA-F])\.(?P<function>[0-7])$"
)
_VERSION_RE = re.compile(r"^\d+\.\d+(\.\d+)?$")
# Bounds beyond which a value is a typo, not a host (they also keep the C side's ints whole).
MAX_GPU_MINOR = 253  # /dev/nvidia254 and 255 are nvidia-modeset and nvidiactl
MAX_MEMORY_MIB = 2**32
MAX_NUMA_NODE = 1023
MAX_IMEX_CHANNELS = 2048  # the driver's default channel count
MAX_NVSWITCHES = 64
MAX_GDS_DEVICES = 256
# Entry points of fakenvml.c that consult error rules, by unversioned name (a test checks this
# against the library's exports).
INJECTABLE_CALLS = frozenset(
    {
        "nvmlInit",
        "nvmlShutdown",
        "nvmlSystemGetDriverVersion",
        "nvmlSystemGetNVMLVersion",
        "nvmlSystemGetCudaDriverVersion",
        "nvmlDeviceGetCount",
        "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetHandleByUUID",
        "nvmlDeviceGetHandleByPciBusId",
        "nvmlDeviceGetName",
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetMinorNumber",
        "nvmlDeviceGetPciInfo",
        "nvmlDeviceGetArchitecture",
        "nvmlDeviceGetCudaComputeCapability",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetMigMode",
        "nvmlDeviceGetMaxMigDeviceCount",
        "nvmlDeviceGetMigDeviceHandleByIndex",
        "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
        "nvmlDeviceIsMigDeviceHandle",
        "nvmlDeviceGetGpuInstanceId",
        "nvmlDeviceGetComputeInstanceId",
        "nvmlDeviceGetGpuInstanceProfileInfo",
        "nvmlDeviceGetGpuInstanceById",
        "nvmlGpuInstanceGetInfo",
        "nvmlDeviceGetSupportedEventTypes",
        "nvmlEventSetCreate",
        "nvmlDeviceRegisterEvents",
        "nvmlEventSetWait",
        "nvmlEventSetFree",
        "nvmlDeviceGetNvLinkState",
        "nvmlDeviceGetNvLinkVersion",
        "nvmlDeviceGetNvLinkCapability",
        "nvmlDeviceGetNvLinkRemotePciInfo",
        "nvmlDeviceGetNvLinkRemoteDeviceType",
        "nvmlDeviceGetTopologyCommonAncestor",
        "nvmlDeviceGetP2PStatus",
        "nvmlDeviceGetNumaNodeId",
        "nvmlDeviceGetAttributes",
        "nvmlGpuInstanceGetComputeInstanceProfileInfo",
        "nvmlGpuInstanceGetComputeInstanceById",
        "nvmlComputeInstanceGetInfo",
    }
)
# Spellings that share a rule with another entry point.
_CALL_ALIASES = {
    "nvmlInitWithFlags": "nvmlInit",
    "nvmlDeviceGetGpuInstanceProfileInfoV": "nvmlDeviceGetGpuInstanceProfileInfo",
    "nvmlGpuInstanceGetComputeInstanceProfileInfoV": "nvmlGpuInstanceGetComputeInstanceProfileInfo",
}


class TopologyError(ValueError):
    """A topology file is invalid; the message names the file, the field and the bad value."""


@attrs.frozen
class PciAddress:
    """A PCI address; NVML and sysfs spell it differently."""

    domain: int
    bus: int
    device: int
    function: int = 0

    @property
    def nvml(self) -> str:
        """The form NVML reports in nvmlPciInfo_t.busId."""
        return f"{self.domain:08X}:{self.bus:02X}:{self.device:02X}.0"

    @property
    def nvml_legacy(self) -> str:
        """The form NVML reports in nvmlPciInfo_t.busIdLegacy."""
        return f"{self.domain:04X}:{self.bus:02X}:{self.device:02X}.0"

    @property
    def sysfs(self) -> str:
        """The form of /sys/bus/pci/devices and /dev/dri/by-path: lower case, 4-digit domain."""
        return f"{self.domain:04x}:{self.bus:02x}:{self.device:02x}.{self.function}"


@attrs.frozen
class ComputeInstance:
    """A compute instance, which NVML exposes as one MIG device."""

    id: int
    uuid: str
    slices: int


@attrs.frozen
class GpuInstance:
    """A GPU instance: a profile placed on a range of memory slices, holding compute instances."""

    id: int
    profile: GiProfile
    start: int
    size: int
    compute_instances: tuple[ComputeInstance, ...]


@attrs.frozen
class MigDevice:
    """What NVML reports for one MIG device handle (derived from the GPU instances)."""

    gpu: int
    index: int  # handle index on the parent, as in nvmlDeviceGetMigDeviceHandleByIndex
    gpu_instance: GpuInstance
    compute_instance: ComputeInstance
    name: str
    memory_total: int

    @property
    def uuid(self) -> str:
        """The MIG-... UUID."""
        return self.compute_instance.uuid

    @property
    def compute_instance_start(self) -> int:
        """The compute instance's first compute slice in its GPU instance (CIs in file order)."""
        cis = self.gpu_instance.compute_instances
        return sum(c.slices for c in cis[: cis.index(self.compute_instance)])


@attrs.frozen
class Gpu:
    """A full GPU as NVML reports it."""

    index: int
    name: str
    uuid: str
    minor: int
    pci: PciAddress
    architecture: str
    compute_capability: tuple[int, int]
    memory_total: int
    memory_reserved: int
    memory_used: int
    pci_device_id: int
    pci_subsystem_id: int
    mig_capable: bool
    mig_mode: bool  # current mode enabled
    mig_pending: bool
    max_mig_devices: int
    mig_profiles: tuple[GiProfile, ...]
    gpu_instances: tuple[GpuInstance, ...]
    ecc: bool = False
    nvlinks: int = 0  # NVLink links of the board
    numa_node: int | None = None  # None: the host has no NUMA information (sysfs says -1)
    # PCIe path from the CPU: host bridge, then the PCIe switches above the GPU, outermost first
    pcie_path: tuple[str, ...] = ()

    @property
    def architecture_id(self) -> int:
        """The nvmlDeviceArchitecture_t value."""
        return ARCHITECTURES[self.architecture]

    @property
    def mig_devices(self) -> tuple[MigDevice, ...]:
        """MIG devices in handle-index order: GPU instances in file order, then their CIs."""
        if not self.mig_mode:
            return ()
        out: list[MigDevice] = []
        for gi in self.gpu_instances:
            for ci in gi.compute_instances:
                if ci.slices == gi.profile.slices:
                    label = gi.profile.name
                else:
                    label = f"{ci.slices}c.{gi.profile.name}"
                out.append(
                    MigDevice(
                        self.index, len(out), gi, ci, f"{self.name} MIG {label}",
                        gi.profile.memory_mib * MIB,
                    )
                )  # fmt: skip
        return tuple(out)


@attrs.frozen
class ErrorRule:
    """Make `call` fail with `code` on a device (None: any), `times` times (-1: always)."""

    call: str
    code: int
    gpu: int | None = None
    mig: int | None = None
    times: int = -1


@attrs.frozen
class Extras:
    """Non-GPU devices of the host, as on a DGX (reference layout)."""

    nvswitches: int = 0
    gds_devices: int = 0
    gdrcopy: bool = False
    infiniband: bool = False


@attrs.frozen
class NvLinkBridge:
    """Point-to-point NVLinks between two GPUs (an NVLink bridge between two boards)."""

    gpus: tuple[int, int]
    links: int


@attrs.frozen
class NvLink:
    """The GPUs' NVLinks: to an NVSwitch fabric (every GPU, links_per_gpu links spread over the
    switches) and/or point to point."""

    nvswitches: tuple[PciAddress, ...] = ()
    links_per_gpu: int = 0
    bridges: tuple[NvLinkBridge, ...] = ()


@attrs.frozen
class Topology:
    """A whole fake host: driver, GPUs, MIG layout, interconnect, IMEX channels, errors."""

    name: str
    description: str
    driver_version: str
    cuda_version: str
    gpus: tuple[Gpu, ...]
    imex_channels: int = 0
    other_display_devices: tuple[PciAddress, ...] = ()
    extras: Extras = Extras()
    errors: tuple[ErrorRule, ...] = ()
    nvml_version_override: str | None = None
    source: str = "<memory>"
    nvlink: NvLink = NvLink()

    @property
    def nvml_version(self) -> str:
        """nvmlSystemGetNVMLVersion: '<CUDA major>.<driver version>' unless set."""
        if self.nvml_version_override:
            return self.nvml_version_override
        return f"{self.cuda_version.split('.')[0]}.{self.driver_version}"

    @property
    def cuda_driver_version(self) -> int:
        """nvmlSystemGetCudaDriverVersion: 12.4 -> 12040."""
        major, minor = self.cuda_version.split(".")[:2]
        return int(major) * 1000 + int(minor) * 10

    @property
    def mig_devices(self) -> tuple[MigDevice, ...]:
        """All MIG devices of all GPUs."""
        return tuple(m for g in self.gpus for m in g.mig_devices)

    def with_errors(self, rules: list[dict[str, Any]], source: str = "errors") -> Topology:
        """The same host with these error rules (YAML `errors` syntax) added after its own."""
        if not isinstance(rules, list):
            raise TopologyError(f"{source}: expected a list of error rules, got {_show(rules)}")
        added = tuple(
            _error_rule(_Obj(r, f"errors[{i}]", source), self.gpus) for i, r in enumerate(rules)
        )
        return attrs.evolve(self, errors=self.errors + added)

    def with_driver_version(self, version: str) -> Topology:
        """The same host with another driver version (NVML version follows unless pinned)."""
        if not _VERSION_RE.match(version):
            raise TopologyError(f"--driver-version: not a driver version: {version!r}")
        return attrs.evolve(self, driver_version=version)


# ------------------------------------------------------------------ loading


def topologies_dir() -> Path:
    """Where shipped topologies live: $GPU_CDI_TOPOLOGIES or the repository's specs/topologies."""
    env = os.environ.get("GPU_CDI_TOPOLOGIES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "specs" / "topologies"


def shipped_topologies() -> list[str]:
    """Names of the shipped topologies."""
    return sorted(p.stem for p in topologies_dir().glob("*.yaml"))


def load_topology(name_or_path: str | os.PathLike[str]) -> Topology:
    """Load a topology by shipped name (e.g. 'dgx-a100') or from a YAML file path."""
    text = os.fspath(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or os.sep in text):
        path = topologies_dir() / f"{text}.yaml"
        if not path.is_file():
            known = ", ".join(shipped_topologies()) or "none"
            raise TopologyError(f"unknown topology {text!r} (shipped: {known}; or give a file)")
    raw = _read_text(path)
    try:
        data = yaml.load(raw, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = " ".join(f"{e.context or ''} {e.problem or ''}".split())
        raise TopologyError(f"{where}: not valid YAML: {what}") from None
    except yaml.YAMLError as e:
        raise TopologyError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    return parse_topology(data, str(path))


# Far more than any topology (scale-64 is 70 kB); a bigger file is not one.
MAX_TOPOLOGY_BYTES = 16 * 1024 * 1024


def _read_text(path: Path) -> str:
    """The file's text; only a regular file is read, so a FIFO or a device cannot hang us."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise TopologyError(f"{path}: cannot read topology: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise TopologyError(f"{path}: cannot read topology: {kind}")
        if st.st_size > MAX_TOPOLOGY_BYTES:
            raise TopologyError(
                f"{path}: {st.st_size} bytes, more than a topology can be "
                f"({MAX_TOPOLOGY_BYTES}): not a topology file"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_TOPOLOGY_BYTES + 1)
    except OSError as e:
        raise TopologyError(f"{path}: cannot read topology: {e.strerror}") from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TopologyError(
            f"{path}: not UTF-8 text (byte {e.start} is 0x{data[e.start]:02x}): "
            "a binary file is not a topology"
        ) from None


# libyaml's parser when PyYAML has it; the constructor is Python either way
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[misc,valid-type]
    """The safe loader, refusing duplicate keys (PyYAML would let the last one win silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep)  # type: ignore[no-any-return]


class _Obj:
    """A mapping being consumed field by field, so unknown keys can be reported."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        if not isinstance(data, dict):
            at = f"{where}: " if where else "top level: "
            raise TopologyError(f"{source}: {at}expected a mapping, got {_show(data)}")
        self.data = dict(data)
        self.where = where
        self.source = source

    def _fail(self, key: str, msg: str) -> TopologyError:
        path = f"{self.where}.{key}" if self.where else key
        return TopologyError(f"{self.source}: {path}: {msg}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        return self.data.pop(key, default)

    def str_(self, key: str, default: str | None = None) -> str:
        if key not in self.data:
            if default is None:
                raise self._fail(key, "required field is missing")
            return default
        v = self.data.pop(key)
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise self._fail(key, f"expected a string, got {_show(v)}")
        s = str(v)
        if "\t" in s or "\n" in s or not s:
            raise self._fail(key, f"must be a non-empty single line without tabs: {s!r}")
        return s

    def int_(
        self, key: str, default: int | None = None, minimum: int = 0, maximum: int = 2**31 - 1
    ) -> int:
        if key not in self.data:
            if default is None:
                raise self._fail(key, "required field is missing")
            return default
        v = self.data.pop(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._fail(key, f"expected an integer, got {_show(v)}")
        if v < minimum:
            raise self._fail(key, f"must be >= {minimum}, got {v}")
        if v > maximum:
            raise self._fail(key, f"must be <= {maximum}, got {v}")
        return v

    def bool_(self, key: str, default: bool) -> bool:
        v = self.data.pop(key, default)
        if not isinstance(v, bool):
            raise self._fail(key, f"expected true or false, got {_show(v)}")
        return v

    def list_(self, key: str) -> list[Any]:
        v = self.data.pop(key, [])
        if v is None:
            return []
        if not isinstance(v, list):
            raise self._fail(key, f"expected a list, got {_show(v)}")
        return v

    def error(self, key: str, msg: str) -> TopologyError:
        return self._fail(key, msg)

    def done(self) -> None:
        if self.data:
            keys = ", ".join(sorted(map(str, self.data)))
            where = f" in {self.where}" if self.where else ""
            raise TopologyError(f"{self.source}: unknown field(s){where}: {keys}")


def _show(v: Any) -> str:
    return f"{type(v).__name__} {v!r}"


def parse_pci(text: str, where: str) -> PciAddress:
    """Parse 'DDDD:BB:DD.F' (or NVML's 8-digit domain form)."""
    m = _BDF_RE.match(text)
    if not m:
        raise TopologyError(f"{where}: not a PCI address (want 0000:07:00.0): {text!r}")
    return PciAddress(
        int(m["domain"] or "0", 16), int(m["bus"], 16), int(m["device"], 16), int(m["function"])
    )


def _uuid(o: _Obj, key: str, prefix: str, seed: str | None) -> str:
    if not o.has(key) and seed is not None:
        return f"{prefix}-{uuidlib.uuid5(uuidlib.NAMESPACE_URL, seed)}"
    v = o.str_(key)
    if not v.startswith(f"{prefix}-") or not _UUID_RE.match(v[len(prefix) + 1 :]):
        raise o.error(key, f"expected {prefix}-<lower-case uuid>, got {v!r}")
    return v


def _model(o: _Obj) -> Model | None:
    if not o.has("model"):
        return None
    key = o.str_("model")
    if key not in MODELS:
        raise o.error("model", f"unknown model {key!r} (known: {', '.join(sorted(MODELS))})")
    return MODELS[key]


def _memory(o: _Obj, model: Model | None) -> tuple[int, int, int]:
    if not o.has("memory"):
        if model is None:
            raise o.error("memory", "required without a model")
        return model.memory_total_mib * MIB, model.memory_reserved_mib * MIB, 0
    m = _Obj(o.raw("memory"), f"{o.where}.memory", o.source)
    total = m.int_("total_mib", model.memory_total_mib if model else None, 1, MAX_MEMORY_MIB)
    reserved = m.int_("reserved_mib", model.memory_reserved_mib if model else 0)
    used = m.int_("used_mib", 0)
    m.done()
    if reserved + used > total:
        raise o.error(
            "memory", f"reserved_mib + used_mib ({reserved + used}) > total_mib ({total})"
        )
    return total * MIB, reserved * MIB, used * MIB


def _compute_capability(o: _Obj, model: Model | None) -> tuple[int, int]:
    if not o.has("compute_capability"):
        if model is None:
            raise o.error("compute_capability", "required without a model")
        return model.compute_capability
    text = o.str_("compute_capability")
    m = re.fullmatch(r"(\d{1,2})\.(\d{1,2})", text)
    if not m:
        raise o.error("compute_capability", f"expected MAJOR.MINOR like '8.0', got {text!r}")
    return int(m[1]), int(m[2])


def _gpu_instances(
    mig: _Obj, model: Model | None, gpu_index: int, seed: str
) -> tuple[GpuInstance, ...]:
    items = mig.list_("gpu_instances")
    if items and model is None:
        raise mig.error("gpu_instances", "MIG needs a model (which defines the MIG profiles)")
    assert model is not None or not items
    profiles = {p.name: p for p in model.mig_profiles} if model else {}
    out: list[GpuInstance] = []
    used_slices: dict[int, int] = {}
    for i, item in enumerate(items):
        gi = _Obj(item, f"{mig.where}.gpu_instances[{i}]", mig.source)
        gid = gi.int_("id", maximum=MIG_GPU_INSTANCE_IDS - 1)
        if any(g.id == gid for g in out):
            raise gi.error("id", f"duplicate GPU instance id {gid}")
        pname = gi.str_("profile")
        if pname not in profiles:
            raise gi.error(
                "profile",
                f"unknown profile {pname!r} for {model.key if model else '?'} "
                f"(known: {', '.join(profiles)})",
            )
        profile = profiles[pname]
        pl = _Obj(gi.raw("placement"), f"{gi.where}.placement", gi.source)
        start = pl.int_("start")
        size = pl.int_("size", profile.memory_slices, 1)
        pl.done()
        assert model is not None
        if size != profile.memory_slices:
            raise gi.error(
                "placement",
                f"size {size} does not match profile {pname} ({profile.memory_slices} slices)",
            )
        if start % size or start + size > model.memory_slices:
            raise gi.error("placement", f"start {start} is not a valid placement for {pname}")
        for s in range(start, start + size):
            if s in used_slices:
                raise gi.error(
                    "placement",
                    f"memory slice {s} already used by GPU instance {used_slices[s]}",
                )
            used_slices[s] = gid
        cis: list[ComputeInstance] = []
        ci_items = gi.list_("compute_instances") or [{"id": 0}]
        for j, ci_item in enumerate(ci_items):
            ci = _Obj(ci_item, f"{gi.where}.compute_instances[{j}]", gi.source)
            cid = ci.int_("id", maximum=MIG_COMPUTE_INSTANCE_IDS - 1)
            if any(c.id == cid for c in cis):
                raise ci.error("id", f"duplicate compute instance id {cid}")
            slices = ci.int_("slices", profile.slices, 1)
            uuid = _uuid(ci, "uuid", "MIG", f"{seed}/gpu{gpu_index}/gi{gid}/ci{cid}")
            ci.done()
            cis.append(ComputeInstance(cid, uuid, slices))
        if sum(c.slices for c in cis) > profile.slices:
            raise gi.error(
                "compute_instances",
                f"use {sum(c.slices for c in cis)} compute slices, profile {pname} has "
                f"{profile.slices}",
            )
        gi.done()
        out.append(GpuInstance(gid, profile, start, size, tuple(cis)))
    return tuple(out)


def _gpu(o: _Obj, index: int, seed: str) -> Gpu:
    model = _model(o)
    if o.has("index") and o.int_("index") != index:
        raise TopologyError(f"{o.source}: {o.where}.index: GPUs must be listed in index order")
    name = o.str_("name", model.name if model else None)
    uuid = _uuid(o, "uuid", "GPU", None)
    minor = o.int_("minor", index, maximum=MAX_GPU_MINOR)
    pci = parse_pci(o.str_("pci_bus_id"), f"{o.source}: {o.where}.pci_bus_id")
    arch = o.str_("architecture", model.architecture if model else None)
    if arch not in ARCHITECTURES:
        raise o.error("architecture", f"unknown {arch!r} (known: {', '.join(ARCHITECTURES)})")
    cc = _compute_capability(o, model)
    total, reserved, used = _memory(o, model)
    device_id = o.int_(
        "pci_device_id", model.pci_device_id if model else 0x20B010DE, maximum=0xFFFFFFFF
    )
    subsystem_id = o.int_(
        "pci_subsystem_id", model.pci_subsystem_id if model else 0, maximum=0xFFFFFFFF
    )
    ecc = o.bool_("ecc", model.ecc if model else False)
    numa = o.int_("numa_node", maximum=MAX_NUMA_NODE) if o.has("numa_node") else None
    path = o.str_("pcie_path", f"hostbridge-{pci.sysfs}")
    if not re.fullmatch(r"[\w.:-]+(/[\w.:-]+)*", path):
        raise o.error("pcie_path", f"expected names separated by '/' like 'hb0/sw1', got {path!r}")
    capable = model.mig_capable if model else False
    mig_mode = mig_pending = False
    gis: tuple[GpuInstance, ...] = ()
    if o.has("mig"):
        mig = _Obj(o.raw("mig"), f"{o.where}.mig", o.source)
        mode = mig.str_("mode", "disabled" if capable else "unsupported")
        if mode not in ("enabled", "disabled", "unsupported"):
            raise mig.error("mode", f"expected enabled, disabled or unsupported, got {mode!r}")
        if mode != "unsupported" and not capable:
            raise mig.error("mode", f"{name} does not support MIG")
        capable = mode != "unsupported"
        mig_mode = mode == "enabled"
        pending = mig.str_("pending", mode if capable else "disabled")
        if pending not in ("enabled", "disabled"):
            raise mig.error("pending", f"expected enabled or disabled, got {pending!r}")
        mig_pending = pending == "enabled"
        gis = _gpu_instances(mig, model, index, seed)
        if gis and not mig_mode:
            raise mig.error("gpu_instances", "GPU instances need mode: enabled")
        mig.done()
    else:
        mig_pending = False
    o.done()
    gpu = Gpu(
        index, name, uuid, minor, pci, arch, cc, total, reserved, used, device_id, subsystem_id,
        capable, mig_mode, mig_pending, model.max_mig_devices if (model and capable) else 0,
        model.mig_profiles if (model and capable) else (), gis, ecc,
        model.nvlinks if model else 0, numa, tuple(path.split("/")),
    )  # fmt: skip
    if len(gpu.mig_devices) > gpu.max_mig_devices:
        raise TopologyError(
            f"{o.source}: {o.where}.mig: {len(gpu.mig_devices)} MIG devices, "
            f"more than the {gpu.max_mig_devices} the GPU supports"
        )
    return gpu


def nvml_error_code(err: object) -> int:
    """An nvmlReturn_t error from its name (NVML_ERROR_ prefix optional) or number."""
    if isinstance(err, int) and not isinstance(err, bool):
        if not 0 <= err <= NVML_ERRORS["UNKNOWN"]:
            raise ValueError(f"{err} is not an nvmlReturn_t value")
        code = err
    elif isinstance(err, str) and err.removeprefix("NVML_ERROR_") in NVML_ERRORS:
        code = NVML_ERRORS[err.removeprefix("NVML_ERROR_")]
    else:
        raise ValueError(f"expected an NVML error name like GPU_IS_LOST, got {err!r}")
    if code == 0:
        raise ValueError("SUCCESS is not an error")
    return code


def parse_device_ref(dev: object) -> tuple[int, int | None] | None:
    """(GPU index, MIG handle index or None) from 3 or "3:1"; None if it is neither."""
    if isinstance(dev, bool) or not isinstance(dev, int | str):
        return None
    m = re.fullmatch(r"(\d+)(?::(\d+))?", str(dev))
    if m is None:
        return None
    return int(m[1]), int(m[2]) if m[2] is not None else None


def _error_rule(o: _Obj, gpus: tuple[Gpu, ...]) -> ErrorRule:
    given = o.str_("call")
    call = re.sub(r"_v\d+$", "", given)
    call = _CALL_ALIASES.get(call, call)
    if call != "*" and call not in INJECTABLE_CALLS:
        raise o.error(
            "call",
            f"{given!r} is not an entry point of the fake NVML; use '*' or one of: "
            + ", ".join(sorted(INJECTABLE_CALLS)),
        )
    try:
        code = nvml_error_code(o.raw("error"))
    except ValueError as e:
        raise o.error("error", str(e)) from None
    gpu = mig = None
    if o.has("device"):
        dev = o.raw("device")
        ref = parse_device_ref(dev)
        if ref is None:
            raise o.error("device", f"expected a GPU index or GPU:MIG index, got {dev!r}")
        gpu, mig = ref
        if gpu >= len(gpus):
            raise o.error("device", f"no GPU {gpu} (the topology has {len(gpus)})")
        if mig is not None and mig >= gpus[gpu].max_mig_devices:
            raise o.error(
                "device",
                f"no MIG device {gpu}:{mig} ({gpus[gpu].name} has at most "
                f"{gpus[gpu].max_mig_devices})",
            )
    times = o.int_("times", -1, minimum=-1)
    o.done()
    return ErrorRule(call, code, gpu, mig, times)


def parse_topology(data: Any, source: str) -> Topology:
    """Validate a loaded YAML document and build the Topology."""
    top = _Obj(data, "", source)
    name = top.str_("name")
    description = top.str_("description", "-")
    driver = top.str_("driver_version")
    if not _VERSION_RE.match(driver):
        raise top.error("driver_version", f"not a driver version: {driver!r}")
    cuda = top.str_("cuda_version")
    if not re.fullmatch(r"\d+\.\d+", cuda):
        raise top.error("cuda_version", f"expected MAJOR.MINOR like '12.4', got {cuda!r}")
    nvml = top.str_("nvml_version", "") or None
    imex = top.int_("imex_channels", 0, maximum=MAX_IMEX_CHANNELS)
    others = tuple(
        parse_pci(str(p), f"{source}: other_display_devices[{i}]")
        for i, p in enumerate(top.list_("other_display_devices"))
    )
    gpu_items = top.list_("gpus")
    gpus = tuple(_gpu(_Obj(g, f"gpus[{i}]", source), i, name) for i, g in enumerate(gpu_items))
    _check_unique(gpus, source)
    _check_numa(gpus, source)
    nvlink = (
        _nvlink(_Obj(top.raw("nvlink"), "nvlink", source), gpus) if top.has("nvlink") else NvLink()
    )
    extras = Extras(len(nvlink.nvswitches))
    if top.has("extras"):
        ex = _Obj(top.raw("extras"), "extras", source)
        extras = Extras(
            ex.int_("nvswitches", len(nvlink.nvswitches), maximum=MAX_NVSWITCHES),
            ex.int_("gds_devices", 0, maximum=MAX_GDS_DEVICES),
            ex.bool_("gdrcopy", False),
            ex.bool_("infiniband", False),
        )
        if nvlink.nvswitches and extras.nvswitches != len(nvlink.nvswitches):
            raise ex.error(
                "nvswitches",
                f"{extras.nvswitches}, but nvlink.nvswitches lists {len(nvlink.nvswitches)} "
                "(omit it: it defaults to that list's length)",
            )
        ex.done()
    errors = tuple(
        _error_rule(_Obj(e, f"errors[{i}]", source), gpus)
        for i, e in enumerate(top.list_("errors"))
    )
    top.done()
    return Topology(
        name, description, driver, cuda, gpus, imex, others, extras, errors, nvml, source, nvlink
    )


def _check_numa(gpus: tuple[Gpu, ...], source: str) -> None:
    """NUMA nodes are given for all GPUs or none; a host bridge sits in one NUMA node."""
    given = [g.numa_node is not None for g in gpus]
    if any(given) and not all(given):
        i = given.index(False)
        raise TopologyError(
            f"{source}: gpus[{i}].numa_node: missing (give every GPU's NUMA node, or none)"
        )
    node_of: dict[str, tuple[int | None, int]] = {}
    for g in gpus:
        bridge = g.pcie_path[0]
        node, first = node_of.setdefault(bridge, (g.numa_node, g.index))
        if node != g.numa_node:
            raise TopologyError(
                f"{source}: gpus[{g.index}].numa_node: {g.numa_node}, but host bridge "
                f"{bridge!r} is in NUMA node {node} (gpus[{first}])"
            )


def _nvlink(o: _Obj, gpus: tuple[Gpu, ...]) -> NvLink:
    switches = tuple(
        parse_pci(str(p), f"{o.source}: nvlink.nvswitches[{i}]")
        for i, p in enumerate(o.list_("nvswitches"))
    )
    taken = {g.pci for g in gpus}
    for i, sw in enumerate(switches):
        if sw in taken:
            raise o.error(f"nvswitches[{i}]", f"{sw.sysfs} is already used by a GPU or switch")
        taken.add(sw)
    per_gpu = o.int_("links_per_gpu", 0)
    if bool(per_gpu) != bool(switches):
        raise o.error("links_per_gpu", "give it (> 0) together with nvswitches, and only then")
    bridges: list[NvLinkBridge] = []
    for i, item in enumerate(o.list_("bridges")):
        b = _Obj(item, f"nvlink.bridges[{i}]", o.source)
        pair = b.list_("gpus")
        if (
            len(pair) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair)
            or pair[0] == pair[1]
            or not all(0 <= x < len(gpus) for x in pair)
        ):
            raise b.error(
                "gpus", f"expected two different GPU indexes (0..{len(gpus) - 1}), got {pair!r}"
            )
        bridges.append(NvLinkBridge((pair[0], pair[1]), b.int_("links", minimum=1)))
        b.done()
    o.done()
    for g in gpus:
        used = per_gpu + sum(b.links for b in bridges if g.index in b.gpus)
        if used > g.nvlinks:
            raise TopologyError(
                f"{o.source}: nvlink: gpus[{g.index}] would use {used} NVLinks, "
                f"{g.name} has {g.nvlinks}"
            )
    return NvLink(switches, per_gpu, tuple(bridges))


def _check_unique(gpus: tuple[Gpu, ...], source: str) -> None:
    seen: dict[object, str] = {}

    def claim(value: object, what: str) -> None:
        if value in seen:
            raise TopologyError(f"{source}: {what}: {value!r} already used by {seen[value]}")
        seen[value] = what

    for g in gpus:
        claim(g.uuid, f"gpus[{g.index}].uuid")
        claim(("minor", g.minor), f"gpus[{g.index}].minor")
        claim(g.pci, f"gpus[{g.index}].pci_bus_id")
        for m in g.mig_devices:
            claim(m.uuid, f"gpus[{g.index}] MIG device {m.index} uuid")


def iter_mig_devices(topology: Topology) -> Iterator[MigDevice]:
    """All MIG devices, GPU by GPU."""
    for g in topology.gpus:
        yield from g.mig_devices
