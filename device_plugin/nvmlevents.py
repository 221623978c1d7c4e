"""The few NVML calls the health watcher makes, through ctypes.

Why not pynvml, which discovery uses: importing it costs 3.3 MB of resident memory (it defines
some 2,500 names, hundreds of ctypes structures), a good part of the plugin's 45 MB budget, for
nine calls. The two structures here are pynvml's, field for field (tests/device_plugin compares
them); the library is loaded by absolute path from the driver root, as discovery loads it.
"""

from __future__ import annotations

import contextlib
import ctypes
from typing import Any

SUCCESS = 0
NOT_SUPPORTED = 3
FUNCTION_NOT_FOUND = 13
TIMEOUT = 10
GPU_IS_LOST = 15


class NvmlError(Exception):
    """An NVML call failed; `code` is the nvmlReturn_t, the message NVML's own string."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class EventData(ctypes.Structure):
    """nvmlEventData_t."""

    _fields_ = [
        ("device", ctypes.c_void_p),
        ("eventType", ctypes.c_ulonglong),
        ("eventData", ctypes.c_ulonglong),
        ("gpuInstanceId", ctypes.c_uint),
        ("computeInstanceId", ctypes.c_uint),
    ]


class Memory(ctypes.Structure):
    """nvmlMemory_t (v1)."""

    _fields_ = [
        ("total", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    ]


class Nvml:
    """An initialised NVML from `library`; use as a context manager (nvmlShutdown on exit)."""

    def __init__(self, library: str) -> None:
        try:
            self.lib: Any = ctypes.CDLL(library)
        except OSError as error:
            raise NvmlError(-1, f"cannot load {library}: {error}") from None
        self.lib.nvmlErrorString.restype = ctypes.c_char_p
        self._call("nvmlInit_v2")

    def __enter__(self) -> Nvml:
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(NvmlError):
            self._call("nvmlShutdown")

    def _call(self, name: str, *args: Any) -> None:
        try:
            function = getattr(self.lib, name)
        except AttributeError:
            raise NvmlError(FUNCTION_NOT_FOUND, f"{name}: Function Not Found") from None
        code = function(*args)
        if code != SUCCESS:
            text = self.lib.nvmlErrorString(code)
            raise NvmlError(code, text.decode() if text else f"NVML error {code}")

    def handle(self, uuid: str) -> int:
        """nvmlDeviceGetHandleByUUID."""
        handle = ctypes.c_void_p()
        self._call("nvmlDeviceGetHandleByUUID", uuid.encode(), ctypes.byref(handle))
        return handle.value or 0

    def memory(self, handle: int) -> Memory:
        """nvmlDeviceGetMemoryInfo (a cheap question a lost GPU cannot answer)."""
        memory = Memory()
        self._call("nvmlDeviceGetMemoryInfo", ctypes.c_void_p(handle), ctypes.byref(memory))
        return memory

    def supported_events(self, handle: int) -> int:
        """nvmlDeviceGetSupportedEventTypes."""
        types = ctypes.c_ulonglong()
        self._call("nvmlDeviceGetSupportedEventTypes", ctypes.c_void_p(handle), ctypes.byref(types))
        return types.value

    def event_set(self) -> int:
        """nvmlEventSetCreate."""
        event_set = ctypes.c_void_p()
        self._call("nvmlEventSetCreate", ctypes.byref(event_set))
        return event_set.value or 0

    def register(self, handle: int, types: int, event_set: int) -> None:
        """nvmlDeviceRegisterEvents."""
        self._call(
            "nvmlDeviceRegisterEvents",
            ctypes.c_void_p(handle),
            ctypes.c_ulonglong(types),
            ctypes.c_void_p(event_set),
        )

    def wait(self, event_set: int, timeout_ms: int) -> EventData | None:
        """nvmlEventSetWait_v2: the next event, None after `timeout_ms` without one."""
        data = EventData()
        try:
            self._call(
                "nvmlEventSetWait_v2",
                ctypes.c_void_p(event_set),
                ctypes.byref(data),
                ctypes.c_uint(timeout_ms),
            )
        except NvmlError as error:
            if error.code == TIMEOUT:
                return None
            raise
        return data

    def free(self, event_set: int) -> None:
        """nvmlEventSetFree."""
        self._call("nvmlEventSetFree", ctypes.c_void_p(event_set))
