"""GPUs and MIG devices through NVML (pynvml), with libnvidia-ml.so.1 taken from the driver root
(read under --host-root when the node is mounted in a container).

pynvml would dlopen("libnvidia-ml.so.1") through the loader's search path, i.e. the library of
the host we run on, not the one in a driver container at /run/nvidia/driver. We open the
driver root's library by absolute path and hand it to pynvml before nvmlInit.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from cdi.nvidia import devices
from cdi.nvidia.inventory import Gpu, MigDevice

T = TypeVar("T")


class NvmlError(RuntimeError):
    """NVML could not be loaded or initialised; the message says what to do."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pci_id(bus_id: object) -> str:
    """NVML's `00000000:07:00.0` as the kernel spells it in /sys: `0000:07:00.0`."""
    text = _text(bus_id).lower()
    domain, _, rest = text.partition(":")
    return f"{int(domain, 16):04x}:{rest}" if rest else text


class Nvml:
    """An initialised NVML; use as a context manager so nvmlShutdown always runs."""

    def __init__(self, library: str) -> None:
        import ctypes

        import pynvml

        self.nv: Any = pynvml
        try:
            pynvml.nvmlLib = ctypes.CDLL(library)
        except OSError as error:
            raise NvmlError(f"cannot load {library}: {error}") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            raise NvmlError(f"NVML from {library} failed to initialise: {error}") from None

    def __enter__(self) -> Nvml:
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(self.nv.NVMLError):
            self.nv.nvmlShutdown()

    def driver_version(self) -> str:
        """The kernel driver's version, e.g. 550.163.01."""
        try:
            return _text(self.nv.nvmlSystemGetDriverVersion())
        except self.nv.NVMLError as error:
            raise NvmlError(f"NVML cannot tell the driver version: {error}") from None

    def gpus(self, proc_sys_root: str = "/") -> list[Gpu]:
        """Every GPU NVML enumerates; one it cannot query is returned with `error` set."""
        # Read when a GPU is in MIG mode: only then are its thousands of lines needed.
        minors = functools.cache(lambda: devices.mig_minors(proc_sys_root))
        try:
            count = self.nv.nvmlDeviceGetCount()
        except self.nv.NVMLError as error:
            raise NvmlError(f"NVML cannot count the GPUs: {error}") from None
        return [self._gpu(index, minors) for index in range(count)]

    def _gpu(self, index: int, minors: Callable[[], dict[str, str]]) -> Gpu:
        nv = self.nv
        gpu = Gpu(index, "", "", 0)
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            gpu = gpu._replace(pci=pci_id(nv.nvmlDeviceGetPciInfo(handle).busId))
            gpu = gpu._replace(uuid=_text(nv.nvmlDeviceGetUUID(handle)))
            gpu = gpu._replace(minor=nv.nvmlDeviceGetMinorNumber(handle))
            gpu = gpu._replace(name=_text(nv.nvmlDeviceGetName(handle)))
            mig_enabled = self._optional(lambda: nv.nvmlDeviceGetMigMode(handle)[0], 0) == 1
            migs = self._migs(handle, gpu.minor, minors()) if mig_enabled else ()
        except nv.NVMLError as error:
            return gpu._replace(error=f"NVML reports it failing ({error})")
        return gpu._replace(mig_enabled=mig_enabled, migs=migs)

    def _optional(self, call: Callable[[], T], default: T) -> T:
        # Not every GPU or driver knows every call (MIG on a T4, say): that is no failure.
        nv = self.nv
        try:
            return call()
        except (nv.NVMLError_NotSupported, nv.NVMLError_FunctionNotFound):
            return default

    def _migs(
        self, handle: object, gpu_minor: int, minors: dict[str, str]
    ) -> tuple[MigDevice, ...]:
        nv = self.nv
        out = []
        for index in range(nv.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
            except nv.NVMLError_NotFound:
                continue
            gi = nv.nvmlDeviceGetGpuInstanceId(mig)
            ci = nv.nvmlDeviceGetComputeInstanceId(mig)
            out.append(
                MigDevice(
                    index,
                    _text(nv.nvmlDeviceGetUUID(mig)),
                    gi,
                    ci,
                    _text(nv.nvmlDeviceGetName(mig)),
                    devices.mig_caps(minors, gpu_minor, gi, ci),
                )
            )
        return tuple(out)
