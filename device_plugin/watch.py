"""The NVML health watcher: one thread, one NVML event set over every GPU, writing the Board.

As in NVIDIA's plugin: the event mask is XidCriticalError | DoubleBitEccError |
SingleBitEccError (what each GPU supports of it); only XID events act, and an XID on a MIG
device's GPU/compute instance marks that MIG device, on the whole GPU every device on it.
Beyond it: a GPU that NVML no longer finds, or that failed discovery (`lost`), a GPU whose
events cannot be registered (`watch`) and a failing event wait (`nvml`) all recover by
themselves when NVML answers again, checked by a probe of every GPU each `probe_seconds`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from cdi.nvidia.inventory import Gpu
from device_plugin.health import Board, MigRef, XidPolicy, affected, xid_text

log = logging.getLogger("gpu_cdi.device_plugin.health")

# nvmlEventTypeSingleBitEccError | DoubleBitEccError | XidCriticalError
EVENT_MASK = 0x1 | 0x2 | 0x8
XID_EVENT = 0x8


class Watcher:
    """Health of `gpus` (and their MIG devices) from the NVML library at `library`."""

    def __init__(
        self,
        library: str,
        gpus: Sequence[Gpu],
        board: Board,
        policy: XidPolicy,
        *,
        wait_ms: int = 500,
        probe_seconds: float = 1.0,
        on_presence: Callable[[], None] = lambda: None,
    ) -> None:
        self.library = library
        self.gpus = [g for g in gpus if g.uuid]
        self.migs = {g.uuid: [MigRef(m.uuid, m.gi, m.ci) for m in g.migs] for g in self.gpus}
        self.board = board
        self.policy = policy
        self.wait_ms = wait_ms
        self.probe_seconds = probe_seconds
        self.on_presence = on_presence  # a GPU was lost or came back
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="nvml-health", daemon=True)
        self._registered: set[str] = set()
        self._wait_failing = False
        # events name the GPU by handle; a lost GPU's handle cannot tell its UUID any more
        self._by_handle: dict[int | None, str] = {}

    def start(self) -> None:
        """Start watching."""
        self.thread.start()

    def stop(self) -> None:
        """Stop watching (returns within one wait)."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(self.wait_ms / 1000 + 5)

    # -- board writes, with one log line per change of a device's health ----------------

    def _mark(self, uuid: str, cause: str, why: str) -> None:
        if self.board.mark(uuid, cause, why):
            log.warning("%s is unhealthy: %s", uuid, why)

    def _clear(self, uuid: str, cause: str) -> None:
        if self.board.clear(uuid, cause):
            log.info("%s is healthy again", uuid)

    def _mark_all(self, cause: str, why: str) -> None:
        for gpu in self.gpus:
            self._mark(gpu.uuid, cause, why)

    def _clear_all(self, cause: str) -> None:
        for gpu in self.gpus:
            self._clear(gpu.uuid, cause)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        from cdi.nvidia.nvml import Nvml, NvmlError

        said = ""
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                session = Nvml(self.library)
            except NvmlError as error:
                if str(error) != said:
                    said = str(error)
                    log.error("health checks cannot start: %s; retrying", error)
                self._mark_all("nvml", f"NVML failing: {error}")
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            with session:
                self._clear_all("nvml")
                self._watch(session.nv)
            return

    def _watch(self, nv: Any) -> None:
        try:
            event_set = nv.nvmlEventSetCreate()
        except nv.NVMLError as error:
            log.warning("NVML has no events (%s): no XID checks, only lost GPUs noticed", error)
            event_set = None
        try:
            for gpu in self.gpus:
                self._register(nv, event_set, gpu)
            next_probe = time.monotonic() + self.probe_seconds
            while not self.stopping.is_set():
                data = self._wait(nv, event_set)
                if data is not None:
                    self._event(nv, data)
                if time.monotonic() >= next_probe:
                    self._probe(nv, event_set)
                    next_probe = time.monotonic() + self.probe_seconds
        finally:
            if event_set is not None:
                try:
                    nv.nvmlEventSetFree(event_set)
                except nv.NVMLError as error:
                    log.debug("nvmlEventSetFree: %s", error)

    def _wait(self, nv: Any, event_set: object | None) -> Any:
        """The next event within wait_ms, or None; a failing wait marks every GPU until a
        wait works again (NVIDIA's plugin marks them for good)."""
        if event_set is None:
            self.stopping.wait(self.wait_ms / 1000)
            return None
        try:
            data = nv.nvmlEventSetWait_v2(event_set, self.wait_ms)
        except nv.NVMLError_Timeout:
            data = None
        except nv.NVMLError as error:
            if not self._wait_failing:
                log.error("NVML event wait failing: %s", error)
            self._wait_failing = True
            self._mark_all("nvml", f"NVML event wait failing: {error}")
            self.stopping.wait(min(1.0, self.wait_ms / 1000))
            return None
        if self._wait_failing:
            self._wait_failing = False
            log.info("NVML event wait works again")
            self._clear_all("nvml")
        return data

    def _register(self, nv: Any, event_set: object | None, gpu: Gpu) -> bool:
        """Register `gpu`'s events; mark it when that fails (but not when it is too old)."""
        if event_set is None:
            self._registered.add(gpu.uuid)
            return True
        try:
            handle = nv.nvmlDeviceGetHandleByUUID(gpu.uuid)
            mask = EVENT_MASK & nv.nvmlDeviceGetSupportedEventTypes(handle)
            nv.nvmlDeviceRegisterEvents(handle, mask, event_set)
            self._by_handle[_address(handle)] = gpu.uuid
        except nv.NVMLError_NotSupported:
            if gpu.uuid not in self._registered:
                log.warning("%s: NVML has no events for this GPU: no XID checks", gpu.uuid)
        except nv.NVMLError as error:
            self._mark(gpu.uuid, "watch", f"NVML cannot watch it: {error}")
            return False
        self._registered.add(gpu.uuid)
        self._clear(gpu.uuid, "watch")
        return True

    def _event(self, nv: Any, data: Any) -> None:
        if not data.eventType & XID_EVENT:
            log.debug("NVML event 0x%x ignored (only XIDs count)", data.eventType)
            return
        xid = int(data.eventData)
        uuid = self._by_handle.get(_address(data.device))
        if uuid is None:
            log.error("%s on a GPU this plugin does not know: all GPUs marked", xid_text(xid))
            if self.policy.critical(xid):
                self._mark_all("xid", f"{xid_text(xid)} on an unknown GPU")
            return
        if not self.policy.critical(xid):
            log.info("%s on %s skipped (an application error)", xid_text(xid), uuid)
            return
        gi, ci = int(data.gpuInstanceId), int(data.computeInstanceId)
        for hit in affected(uuid, gi, ci, self.migs.get(uuid, ())):
            self._mark(hit, "xid", xid_text(xid))

    def _probe(self, nv: Any, event_set: object | None) -> None:
        """Is every GPU still there? Lost ones are marked, returning ones cleared."""
        changed = False
        for gpu in self.gpus:
            try:
                handle = nv.nvmlDeviceGetHandleByUUID(gpu.uuid)
                nv.nvmlDeviceGetMemoryInfo(handle)
            except nv.NVMLError_NotSupported:
                pass
            except nv.NVMLError as error:
                changed |= not self.board.has(gpu.uuid, "lost")
                self._mark(gpu.uuid, "lost", f"NVML does not find it: {error}")
                self._registered.discard(gpu.uuid)
                continue
            if self.board.has(gpu.uuid, "lost"):
                changed = True
                self._clear(gpu.uuid, "lost")
            if gpu.uuid not in self._registered:
                self._register(nv, event_set, gpu)
        if changed:
            self.on_presence()


def _address(handle: object) -> int | None:
    """The address an NVML handle points at: the same GPU gives the same handle."""
    import ctypes

    return ctypes.cast(handle, ctypes.c_void_p).value  # type: ignore[arg-type]
