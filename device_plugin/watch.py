"""The NVML health watcher: one thread, one NVML event set over every GPU, writing the Board.

As in NVIDIA's plugin: the event mask is XidCriticalError | DoubleBitEccError |
SingleBitEccError (what each GPU supports of it); only XID events act, and an XID on a MIG
device's GPU/compute instance marks that MIG device, on the whole GPU every device on it.
Beyond it: a GPU that NVML no longer finds (`lost`), a GPU whose events cannot be registered
(`watch`) and a failing event wait (`nvml`) all recover by themselves when NVML answers again,
checked by a probe of every GPU each `probe_seconds`; a GPU that failed discovery and answers
the probe asks for a new discovery (`on_found`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from cdi.nvidia.inventory import Gpu
from device_plugin.health import Board, MigRef, XidPolicy, affected, xid_text
from device_plugin.nvmlevents import NOT_SUPPORTED, EventData, Nvml, NvmlError

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
        on_found: Callable[[], None] = lambda: None,
    ) -> None:
        self.library = library
        self.gpus = [g for g in gpus if g.uuid]
        self.migs = {g.uuid: [MigRef(m.uuid, m.gi, m.ci) for m in g.migs] for g in self.gpus}
        self.board = board
        self.policy = policy
        self.wait_ms = wait_ms
        self.probe_seconds = probe_seconds
        # GPUs that failed discovery: when one answers, the node is worth discovering again
        self.failed = {g.uuid for g in self.gpus if g.error}
        self.on_found = on_found
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="nvml-health", daemon=True)
        self._registered: set[str] = set()
        self._wait_failing = False
        self._by_handle: dict[int, str] = {}

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
                self._watch(session)
            return

    def _watch(self, nv: Nvml) -> None:
        try:
            event_set: int | None = nv.event_set()
        except NvmlError as error:
            log.warning("NVML has no events (%s): no XID checks, only lost GPUs noticed", error)
            event_set = None
        try:
            for gpu in self.gpus:
                self._register(nv, event_set, gpu)
            what = "XID events and presence" if event_set is not None else "presence"
            log.info("health checks on: %s of %d GPUs", what, len(self.gpus))
            next_probe = time.monotonic() + self.probe_seconds
            while not self.stopping.is_set():
                data = self._wait(nv, event_set)
                if data is not None:
                    self._event(data)
                if time.monotonic() >= next_probe:
                    self._probe(nv, event_set)
                    next_probe = time.monotonic() + self.probe_seconds
        finally:
            if event_set is not None:
                try:
                    nv.free(event_set)
                except NvmlError as error:
                    log.debug("nvmlEventSetFree: %s", error)

    def _wait(self, nv: Nvml, event_set: int | None) -> EventData | None:
        """The next event within wait_ms, or None; a failing wait marks every GPU until a
        wait works again (NVIDIA's plugin marks them for good)."""
        if event_set is None:
            self.stopping.wait(self.wait_ms / 1000)
            return None
        try:
            data = nv.wait(event_set, self.wait_ms)
        except NvmlError as error:
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

    def _register(self, nv: Nvml, event_set: int | None, gpu: Gpu) -> bool:
        """Register `gpu`'s events; mark it when that fails (but not when it is too old)."""
        if event_set is None:
            self._registered.add(gpu.uuid)
            return True
        try:
            handle = nv.handle(gpu.uuid)
            nv.register(handle, EVENT_MASK & nv.supported_events(handle), event_set)
            self._by_handle[handle] = gpu.uuid
        except NvmlError as error:
            if error.code != NOT_SUPPORTED:
                self._mark(gpu.uuid, "watch", f"NVML cannot watch it: {error}")
                return False
            if gpu.uuid not in self._registered:
                log.warning("%s: NVML has no events for this GPU: no XID checks", gpu.uuid)
        self._registered.add(gpu.uuid)
        self._clear(gpu.uuid, "watch")
        return True

    def _event(self, data: EventData) -> None:
        if not data.eventType & XID_EVENT:
            log.debug("NVML event 0x%x ignored (only XIDs count)", data.eventType)
            return
        xid = int(data.eventData)
        # events name the GPU by handle; a lost GPU's handle cannot tell its UUID any more
        uuid = self._by_handle.get(data.device or 0)
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

    def _probe(self, nv: Nvml, event_set: int | None) -> None:
        """Is every GPU still there? Lost ones are marked, returning ones cleared; a GPU that
        failed discovery and answers now calls `on_found`."""
        found = False
        for gpu in self.gpus:
            try:
                nv.memory(nv.handle(gpu.uuid))
            except NvmlError as error:
                if error.code != NOT_SUPPORTED:
                    self._mark(gpu.uuid, "lost", f"NVML does not find it: {error}")
                    self._registered.discard(gpu.uuid)
                    continue
            self._clear(gpu.uuid, "lost")
            if gpu.uuid not in self._registered:
                self._register(nv, event_set, gpu)
            if gpu.uuid in self.failed:
                self.failed.discard(gpu.uuid)
                found = True
        if found:
            self.on_found()
