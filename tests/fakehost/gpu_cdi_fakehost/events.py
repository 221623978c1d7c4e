"""Inject NVML events into a running fake host: append lines to its events file.

The fake libnvidia-ml.so.1 tails the file (specs/topology-format.md, "Events"): every event set
created by any process sees the XID and ECC events appended after it registered the GPU, a `lost`
GPU answers GPU_IS_LOST to every call from then on (in every process, also ones started later)
until `recovered`, and `wait-error` makes the next nvmlEventSetWait of every event set fail.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import attrs

from gpu_cdi_fakehost import nvmlfile
from gpu_cdi_fakehost.topology import Topology, nvml_error_code, parse_device_ref

# Beside the topology file the library reads (fakenvml.c: EVENTS_FILE), unless $FAKE_NVML_EVENTS.
EVENTS_FILE = "nvml-events.txt"
ENV = "FAKE_NVML_EVENTS"

# What the driver reports when a GPU falls off the bus.
XID_GPU_FELL_OFF_THE_BUS = 79

DeviceRef = int | str  # GPU index, "GPU:MIG" handle index, or a GPU-/MIG- UUID


class EventError(ValueError):
    """An injection names a device the host does not have, or a bad value."""


@attrs.frozen
class EventInjector:
    """Writes events into `path` for a host whose GPUs are `gpus`: (GPU UUID, MIG UUIDs)."""

    path: Path
    gpus: tuple[tuple[str, tuple[str, ...]], ...]
    host: str = "the fake host"

    @classmethod
    def for_topology(cls, path: Path, topology: Topology) -> EventInjector:
        """The injector for a host built from `topology`, writing `path`."""
        gpus = tuple((g.uuid, tuple(m.uuid for m in g.mig_devices)) for g in topology.gpus)
        return cls(path, gpus, topology.name)

    @classmethod
    def for_root(cls, root: Path) -> EventInjector:
        """The injector of the fake host built in `root` (reads the devices from its NVML file)."""
        marker = root / nvmlfile.MARKER
        path = marker / nvmlfile.TOPOLOGY_FILE
        try:
            gpus = nvmlfile.read_devices(path)
        except OSError as e:
            raise EventError(f"{root}: not a fake host ({e.strerror})") from None
        except (KeyError, ValueError, IndexError):
            raise EventError(f"{path}: not a fake NVML topology file") from None
        return cls(marker / EVENTS_FILE, gpus, str(root))

    def xid(self, device: DeviceRef, xid: int, gi: int | None = None, ci: int | None = None) -> str:
        """An XID error on a GPU or MIG device (whose GI/CI ids the event then carries).

        Returns the line written, as do the other methods.

        gi/ci override the instance ids, e.g. for an XID attributed to a GPU instance only.
        """
        uuid = self._uuid(device)
        if not 0 <= xid < 2**32:
            raise EventError(f"XID {xid}: out of range")
        fields = [str(xid)]
        if (gi is None) != (ci is None):
            raise EventError("give both gi and ci, or neither")
        if gi is not None and ci is not None:
            fields += [str(gi), str(ci)]
        return self._append("xid", uuid, *fields)

    def ecc(self, device: DeviceRef, *, double_bit: bool = False) -> str:
        """A single- (default) or double-bit ECC error event."""
        return self._append("ecc-dbe" if double_bit else "ecc-sbe", self._uuid(device))

    def lose(self, device: DeviceRef, *, xid: int | None = XID_GPU_FELL_OFF_THE_BUS) -> str:
        """The GPU falls off the bus: every later call on it is GPU_IS_LOST.

        As with a real GPU, an XID (79 by default; None for none) is reported first.
        """
        uuid = self._gpu_uuid(device)
        first = f"{self.xid(uuid, xid)}\n" if xid is not None else ""
        return first + self._append("lost", uuid)

    def recover(self, device: DeviceRef) -> str:
        """The GPU is back (after a reset): calls on it succeed again."""
        return self._append("recovered", self._gpu_uuid(device))

    def fail_wait(self, error: int | str = "UNKNOWN") -> str:
        """The next nvmlEventSetWait of every event set returns `error`."""
        try:
            code = nvml_error_code(error)
        except ValueError as e:
            raise EventError(str(e)) from None
        return self._append("wait-error", str(code))

    def _append(self, *fields: str) -> str:
        line = " ".join(fields) + "\n"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            raise EventError(f"{self.path}: cannot write events: {e.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise EventError(f"{self.path}: not a regular file: cannot write events")
            # one write() on an O_APPEND descriptor: readers see whole lines only
            os.write(fd, line.encode())
        except OSError as e:
            raise EventError(f"{self.path}: cannot write events: {e.strerror}") from None
        finally:
            os.close(fd)
        return line.rstrip("\n")

    def _uuid(self, device: DeviceRef) -> str:
        if isinstance(device, str) and device.startswith(("GPU-", "MIG-")):
            if not any(device == g or device in migs for g, migs in self.gpus):
                raise EventError(f"{device}: no such GPU or MIG device on {self.host}")
            return device
        ref = parse_device_ref(device)
        if ref is None:
            raise EventError(f"{device!r}: expected a GPU index, GPU:MIG index or UUID")
        gpu, mig = ref
        if gpu >= len(self.gpus):
            raise EventError(f"no GPU {gpu} on {self.host} (it has {len(self.gpus)})")
        uuid, migs = self.gpus[gpu]
        if mig is None:
            return uuid
        if mig >= len(migs):
            raise EventError(
                f"no MIG device {gpu}:{mig} on {self.host} (GPU {gpu} has {len(migs)})"
            )
        return migs[mig]

    def _gpu_uuid(self, device: DeviceRef) -> str:
        uuid = self._uuid(device)
        if uuid.startswith("MIG-"):
            raise EventError(f"{device}: a MIG device; a whole GPU is lost or recovered")
        return uuid
