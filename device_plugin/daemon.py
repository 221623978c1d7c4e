"""The running plugin: discover, serve every resource, register, watch health, keep files current.

Threads: the main one waits for signals and reloads; one registration thread (kubelet.py); one
NVML health thread (watch.py); grpcio's workers per resource server. SIGTERM/SIGINT stop it
(sockets removed); SIGHUP (after a MIG reconfiguration, say), or a GPU that failed discovery
and answers now, makes it discover the node again: files are rewritten when they change,
servers replaced when the devices do. A GPU lost while served stays offered, Unhealthy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Mapping

from device_plugin import allocate, nfd
from device_plugin.config import DEFAULT_KUBELET_SOCKET, Settings
from device_plugin.health import Board, XidPolicy
from device_plugin.kubelet import Registrar
from device_plugin.node import DiscoveryFailed, Node, discover_apart, write_spec
from device_plugin.server import PluginServer, Service
from device_plugin.watch import Watcher

log = logging.getLogger("gpu_cdi.device_plugin")

RETRY_FIRST = 5.0
RETRY_MAX = 60.0


class Daemon:
    """gpu-cdi-device-plugin's lifetime; `run()` returns the exit code."""

    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        self.settings = settings
        self.policy = XidPolicy.from_env(environ)
        self.board = Board()
        self.stopping = threading.Event()
        self.reload = threading.Event()
        self.node: Node | None = None
        self.servers: list[PluginServer] = []
        self.registrar: Registrar | None = None
        self.watcher: Watcher | None = None
        # beside kubelet.sock; with registration off (empty), where kubelet's would be
        self.socket_dir = os.path.dirname(settings.kubelet_socket or DEFAULT_KUBELET_SOCKET)

    # -- lifecycle -----------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; 1 when the node cannot be served and --fail-on-init-error."""
        node = self._first_node()
        if node is None:
            return 1 if not self.stopping.is_set() else 0
        if not self._start(node):
            return 1
        release_memory()
        try:
            while not self.stopping.is_set():
                self.reload.wait(1.0)
                if self.reload.is_set() and not self.stopping.is_set():
                    self.reload.clear()
                    self._rediscover()
        finally:
            self._stop_serving()
            if self.watcher is not None:
                self.watcher.stop()
            log.info("stopped")
        return 0

    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP rediscovers (main thread only)."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.reload.set())

    def stop(self) -> None:
        """Ask `run` to return."""
        self.stopping.set()
        self.reload.set()
        self.board.wake()

    def _first_node(self) -> Node | None:
        said = ""
        delay = RETRY_FIRST
        while not self.stopping.is_set():
            try:
                return discover_apart(self.settings)
            except DiscoveryFailed as error:
                if self.settings.fail_on_init_error:
                    log.error("%s", error)
                    return None
                if str(error) != said:
                    said = str(error)
                    log.error("%s; waiting (--fail-on-init-error=false), retrying", error)
            self.stopping.wait(delay)
            delay = min(delay * 2, RETRY_MAX)
        return None

    def _start(self, node: Node) -> bool:
        """Serve `node`; False when its sockets cannot be served (said)."""
        self.node = node
        for note in node.notes:
            log.warning("%s", note)
        self._write_files(node)
        self._mark_failed(node)
        if self.watcher is None and node.library and self.policy.enabled:
            gpus = node.inventory.gpus
            presence = self.reload.set
            self.watcher = Watcher(node.library, gpus, self.board, self.policy, on_found=presence)
            self.watcher.start()
        elif node.library is None or not self.policy.enabled:
            why = "--inventory" if node.library is None else "DP_DISABLE_HEALTHCHECKS=all"
            log.info("health checks off (%s): every device stays Healthy", why)
        if not self._serve(node):
            return False
        summary = ", ".join(f"{r.name} x{len(r.devices)}" for r in node.resources) or "nothing"
        log.info("offering %s", summary)
        return True

    def _handout(self, node: Node) -> allocate.Handout:
        s = self.settings
        return allocate.Handout(
            s.device_list_strategy, s.kind, s.cdi_annotation_prefix, node.spec_nodes
        )

    def _serve(self, node: Node) -> bool:
        handout = self._handout(node)
        link = node.links.score
        self.servers = [
            PluginServer(
                Service(resource, self.board, handout, link, self.stopping),
                os.path.join(self.socket_dir, resource.socket_name),
            )
            for resource in node.resources
        ]
        if self.settings.kubelet_socket:
            # it serves them too, and keeps trying while kubelet's directory is missing
            self.registrar = Registrar(self.settings.kubelet_socket, self.servers)
            self.registrar.start()
            return True
        log.info("--kubelet-socket is empty: serving in %s, not registering", self.socket_dir)
        try:
            for server in self.servers:
                server.start()
        except OSError as error:
            log.error("%s", error)
            return False
        return True

    def _stop_serving(self) -> None:
        if self.registrar is not None:
            self.registrar.stop()
            self.registrar = None
        self.board.wake()
        for server in self.servers:
            server.stop(grace=1.0)
        self.servers = []

    def _write_files(self, node: Node) -> None:
        from cdi.errors import WriteError
        from cdi.nvidia.generate import GenerateError

        s = self.settings
        if s.cdi_spec_file and node.spec_text is not None:
            try:
                log.info("%s", write_spec(node.spec_text, s.cdi_spec_file))
            except (GenerateError, WriteError) as error:
                log.error("cannot write the CDI spec: %s", error)
        if s.nfd_features_file:
            try:
                if nfd.write(node, s.mig_strategy, s.nfd_features_file):
                    log.info("%s: node labels written", s.nfd_features_file)
            except (WriteError, OSError) as error:
                log.error("cannot write the node labels: %s", error)

    def _mark_failed(self, node: Node) -> None:
        """A GPU NVML failed at discovery is offered Unhealthy (it is not in the spec) until a
        discovery goes through."""
        for gpu in node.inventory.gpus:
            if gpu.error and gpu.uuid:
                if self.board.mark(gpu.uuid, "discovery", gpu.error):
                    log.warning("%s is unhealthy: %s", gpu.uuid, gpu.error)
            elif gpu.uuid:
                self.board.clear(gpu.uuid, "discovery")

    def _rediscover(self) -> None:
        try:
            node = discover_apart(self.settings)
        except DiscoveryFailed as error:
            log.error("discovering the node again failed, keeping what is served: %s", error)
            return
        old = self.node
        if old is not None and node.fingerprint() == old.fingerprint():
            self.node = node
            self._write_files(node)
            self._mark_failed(node)
            log.info("node discovered again: the same devices")
            release_memory()
            return
        log.info("node discovered again: the devices changed, serving them anew")
        self._stop_serving()
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        self._start(node)  # logs the notes, writes the files, marks failed GPUs
        release_memory()


M_ARENA_MAX = -8  # glibc's mallopt parameter


def one_malloc_arena() -> None:
    """One malloc arena for every thread (glibc makes one per thread otherwise: about 1 MB of
    resident memory here for nothing, the plugin answers one kubelet at a time). Call it before
    threads start."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)


def release_memory() -> None:
    """Hand what discovery used back to the system (the process lives for the node's life)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)  # glibc only


def describe(node: Node) -> str:
    """The resources and devices as a table (`--list`)."""
    failing = {g.uuid: g.error for g in node.inventory.gpus if g.error}
    rows = [("RESOURCE", "DEVICE ID", "CDI NAME", "NUMA", "HEALTH")]
    for resource in node.resources:
        for device in resource.devices:
            why = failing.get(device.gpu_uuid)
            numa = "-" if device.numa is None else str(device.numa)
            health = f"Unhealthy: {why}" if why else "Healthy"
            rows.append((resource.name, device.id, device.name, numa, health))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "".join(line.rstrip() + "\n" for line in lines)
