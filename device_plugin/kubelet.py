"""Registration with kubelet, and staying registered across kubelet restarts.

kubelet serves Registration on kubelet.sock; on start it deletes every socket in its directory
(ours included) and creates a new kubelet.sock. One thread polls both every `poll` seconds (two
stat calls): a plugin socket that vanished is served again, a kubelet.sock with a new inode is
a new kubelet, and every resource not registered with the current kubelet is registered, with
backoff after a failure. Each distinct problem is said once, and its end once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

import grpc

from device_plugin.api import VERSION, Stub, pb
from device_plugin.server import PluginServer, file_identity, options

log = logging.getLogger("gpu_cdi.device_plugin")

POLL = 0.2
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
REGISTER_TIMEOUT = 10.0


class _Entry:
    """Registration state of one resource."""

    def __init__(self, server: PluginServer) -> None:
        self.server = server
        self.registered = False
        self.next_try = 0.0
        self.backoff = BACKOFF_FIRST
        self.said = ""


class Registrar:
    """Keeps `servers` serving and registered with the kubelet at `kubelet_socket`."""

    def __init__(
        self, kubelet_socket: str, servers: Sequence[PluginServer], poll: float = POLL
    ) -> None:
        self.kubelet_socket = kubelet_socket
        self.entries = [_Entry(s) for s in servers]
        self.poll = poll
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kubelet", daemon=True)

    def start(self) -> None:
        """Start the registration thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop it (the servers keep running)."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(REGISTER_TIMEOUT + 1)

    def _run(self) -> None:
        kubelet: tuple[int, int, int] | None = None
        absent_said = False
        while not self.stopping.is_set():
            self._keep_serving()
            now = file_identity(self.kubelet_socket)
            if now is None:
                if not absent_said:
                    log.info("waiting for kubelet: %s does not exist yet", self.kubelet_socket)
                    absent_said = True
                self._forget()
            else:
                if now != kubelet:
                    if kubelet is not None or absent_said:
                        log.info("kubelet (re)started: registering again")
                    kubelet = now
                    absent_said = False
                    self._forget()
                self._register_due()
            self.stopping.wait(self.poll)

    def _keep_serving(self) -> None:
        for entry in self.entries:
            if entry.server.replaced():
                # Another process serves this path now (a new plugin taking over, or a second
                # one on the node): fighting over it would make kubelet flap between us.
                entry.registered = False
                self._say(
                    entry, f"{entry.server.path} is served by another process now; leaving it"
                )
                continue
            if not entry.server.alive():
                if entry.server.server is not None:
                    log.info("%s was removed (kubelet restarted?): serving anew", entry.server.path)
                try:
                    entry.server.start()
                except OSError as error:
                    self._say(entry, f"{error}; retrying")
                    continue
                entry.registered = False
                entry.next_try = 0.0

    def _forget(self) -> None:
        for entry in self.entries:
            entry.registered = False
            entry.next_try = 0.0
            entry.backoff = BACKOFF_FIRST

    def _register_due(self) -> None:
        now = time.monotonic()
        for entry in self.entries:
            if entry.registered or now < entry.next_try or not entry.server.alive():
                continue
            error = self._register(entry)
            if error is None:
                entry.registered = True
                entry.backoff = BACKOFF_FIRST
                if entry.said:
                    log.info("%s: registered after all", entry.server.service.resource.name)
                entry.said = ""
                continue
            self._say(entry, f"{error}; retrying with backoff")
            entry.next_try = time.monotonic() + entry.backoff
            entry.backoff = min(entry.backoff * 2, BACKOFF_MAX)

    def _say(self, entry: _Entry, message: str) -> None:
        if message != entry.said:
            log.error("%s", message)
            entry.said = message

    def _register(self, entry: _Entry) -> str | None:
        """Register one resource; None on success, else why not (one line)."""
        resource = entry.server.service.resource
        request = pb.RegisterRequest(
            version=VERSION,
            endpoint=os.path.basename(entry.server.path),
            resource_name=resource.name,
            options=options(),
        )
        try:
            with grpc.insecure_channel(f"unix://{self.kubelet_socket}") as channel:
                Stub(channel, "Registration").Register(
                    request, timeout=REGISTER_TIMEOUT, wait_for_ready=False
                )
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            if code == grpc.StatusCode.UNAVAILABLE:
                return f"kubelet at {self.kubelet_socket} does not answer ({details})"
            return f"kubelet refused to register {resource.name}: {details}"
        log.info(
            "registered %s with kubelet: %d devices on %s",
            resource.name,
            len(resource.devices),
            request.endpoint,
        )
        return None
