"""The runtime side of NRI for tests and benchmarks, written apart from nri_plugin.protocol.

It frames bytes with `struct` directly (only the generated protobuf messages are shared), so
a framing bug in the plugin's layers cannot be mirrored here. Blocking sockets, one thread:
tests drive it step by step while the plugin runs elsewhere (a thread or a process).

Like containerd it sends a ttrpc message larger than 4096 bytes as two mux frames (the first
4096 bytes, then the rest), uses odd increasing stream ids on connection 1, answers
RegisterPlugin on connection 2, and records every frame the plugin sent.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections import deque
from pathlib import Path
from typing import NamedTuple

from nri_plugin.protocol.gen import api_pb2 as api
from nri_plugin.protocol.gen import ttrpc_pb2

MUX = struct.Struct(">II")
TTRPC = struct.Struct(">IIBB")
PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
REQUEST, RESPONSE = 1, 2


class Answer(NamedTuple):
    """A plugin's response to one of our calls."""

    stream_id: int
    code: int
    message: str
    payload: bytes


class FakeRuntimeError(AssertionError):
    """The plugin did something the runtime would not accept, or did not answer in time."""


class PluginConn:
    """One plugin connection, seen from the runtime."""

    def __init__(self, sock: socket.socket, *, go_split: bool = True) -> None:
        self.sock = sock
        self.go_split = go_split
        self._rx = bytearray()
        self._streams: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self._next_stream = 1
        self._answers: dict[int, Answer] = {}
        self.frames: list[tuple[int, int]] = []
        """(conn id, payload length) of every mux frame the plugin sent."""
        self.registered: api.RegisterPluginRequest | None = None
        self.register_status: tuple[int, str] = (0, "")
        """Status to answer RegisterPlugin with (e.g. to test a refused registration)."""
        self.answer_register = True
        """False: read RegisterPlugin but never answer it (a hung runtime)."""
        self.updates: deque[api.UpdateContainersRequest] = deque()
        self.arrivals: list[int] = []
        """Stream ids of the plugin's answers, in the order they arrived."""
        self.closed = False

    # -- writing -------------------------------------------------------------------------

    def _send(self, conn_id: int, message: bytes) -> None:
        if self.go_split and len(message) > 4096:
            parts = [message[:4096], message[4096:]]
        else:
            parts = [message]
        self.sock.sendall(b"".join(MUX.pack(conn_id, len(p)) + p for p in parts))

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (hostile-input tests)."""
        self.sock.sendall(data)

    def request(
        self, method: str, payload: bytes, *, timeout: float = 2.0, service: str = PLUGIN_SERVICE
    ) -> int:
        """Send a call on connection 1; returns its stream id."""
        stream_id = self._next_stream
        self._next_stream += 2
        body = ttrpc_pb2.Request(
            service=service, method=method, payload=payload, timeout_nano=int(timeout * 1e9)
        ).SerializeToString()
        self._send(1, TTRPC.pack(len(body), stream_id, REQUEST, 0) + body)
        return stream_id

    def ttrpc_frame(self, stream_id: int, mtype: int, body: bytes) -> bytes:
        """A raw ttrpc message (not yet mux-framed)."""
        return TTRPC.pack(len(body), stream_id, mtype, 0) + body

    def send_ttrpc(self, conn_id: int, message: bytes) -> None:
        """Mux-frame and send a raw ttrpc message."""
        self._send(conn_id, message)

    # -- reading -------------------------------------------------------------------------

    def _read_some(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FakeRuntimeError("timed out waiting for the plugin")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            raise FakeRuntimeError("timed out waiting for the plugin") from None
        if not data:
            self.closed = True
            raise FakeRuntimeError("plugin closed the connection")
        self._rx += data
        while len(self._rx) >= 8:
            conn_id, length = MUX.unpack_from(self._rx)
            if len(self._rx) < 8 + length:
                break
            self.frames.append((conn_id, length))
            self._streams.setdefault(conn_id, bytearray()).extend(self._rx[8 : 8 + length])
            del self._rx[: 8 + length]
        for conn_id, buf in self._streams.items():
            while len(buf) >= 10:
                length, stream_id, mtype, _ = TTRPC.unpack_from(buf)
                if len(buf) < 10 + length:
                    break
                body = bytes(buf[10 : 10 + length])
                del buf[: 10 + length]
                self._on_message(conn_id, stream_id, mtype, body)

    def _on_message(self, conn_id: int, stream_id: int, mtype: int, body: bytes) -> None:
        if conn_id == 1 and mtype == RESPONSE:
            resp = ttrpc_pb2.Response.FromString(body)
            self.arrivals.append(stream_id)
            self._answers[stream_id] = Answer(
                stream_id, resp.status.code, resp.status.message, resp.payload
            )
        elif conn_id == 2 and mtype == REQUEST:
            req = ttrpc_pb2.Request.FromString(body)
            payload = b""
            code, message = 0, ""
            if req.method == "RegisterPlugin":
                self.registered = api.RegisterPluginRequest.FromString(req.payload)
                code, message = self.register_status
                if not self.answer_register:
                    return
            elif req.method == "UpdateContainers":
                self.updates.append(api.UpdateContainersRequest.FromString(req.payload))
                payload = api.UpdateContainersResponse().SerializeToString()
            else:
                code, message = 12, f"method {req.method}"
            resp = ttrpc_pb2.Response(payload=payload)
            if code:
                resp.status.code, resp.status.message = code, message
            self._send(2, self.ttrpc_frame(stream_id, RESPONSE, resp.SerializeToString()))
        else:
            raise FakeRuntimeError(f"unexpected ttrpc type {mtype} on connection {conn_id}")

    def wait_answer(self, stream_id: int, timeout: float = 5.0) -> Answer:
        """Block until the answer for `stream_id` arrives (others are kept for later)."""
        deadline = time.monotonic() + timeout
        while stream_id not in self._answers:
            self._read_some(deadline)
        return self._answers.pop(stream_id)

    def wait_registered(self, timeout: float = 5.0) -> api.RegisterPluginRequest:
        """Block until RegisterPlugin arrived (and was answered)."""
        deadline = time.monotonic() + timeout
        while self.registered is None:
            self._read_some(deadline)
        return self.registered

    def wait_closed(self, timeout: float = 5.0) -> None:
        """Block until the plugin closes its end."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._read_some(deadline)
        except FakeRuntimeError:
            if not self.closed:
                raise

    def call(self, method: str, message: bytes, *, timeout: float = 2.0) -> Answer:
        """One call on connection 1 and its answer."""
        return self.wait_answer(self.request(method, message, timeout=timeout), timeout + 3)

    def handshake(
        self,
        *,
        config: str = "",
        sync: list[api.SynchronizeRequest] | None = None,
    ) -> tuple[api.ConfigureResponse, list[api.SynchronizeResponse]]:
        """What containerd does after RegisterPlugin: Configure, then Synchronize."""
        self.wait_registered()
        ans = self.call(
            "Configure",
            api.ConfigureRequest(
                config=config,
                runtime_name="fake-runtime",
                runtime_version="0.0",
            ).SerializeToString(),
        )
        if ans.code:
            raise FakeRuntimeError(f"Configure failed: {ans.code} {ans.message}")
        configured = api.ConfigureResponse.FromString(ans.payload)
        synced = []
        for part in sync or [api.SynchronizeRequest()]:
            ans = self.call("Synchronize", part.SerializeToString())
            if ans.code:
                raise FakeRuntimeError(f"Synchronize failed: {ans.code} {ans.message}")
            synced.append(api.SynchronizeResponse.FromString(ans.payload))
        return configured, synced

    def close(self) -> None:
        """Drop the connection, as containerd does when it stops."""
        self.sock.close()


class FakeRuntime:
    """A listening NRI socket that hands out plugin connections."""

    def __init__(self, path: str, *, go_split: bool = True) -> None:
        self.path = path
        self.go_split = go_split
        if os.path.exists(path):
            os.unlink(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(16)

    def accept(self, timeout: float = 5.0) -> PluginConn:
        """The next plugin connection."""
        self.listener.settimeout(timeout)
        try:
            sock, _ = self.listener.accept()
        except TimeoutError:
            raise FakeRuntimeError(f"no plugin connected to {self.path} in {timeout}s") from None
        sock.settimeout(None)
        return PluginConn(sock, go_split=self.go_split)

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        self.listener.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


NOT_SOCKETS = ("file", "directory")


def not_a_socket(base: Path, kind: str) -> Path:
    """`base/nri.sock` made as one of NOT_SOCKETS (what --socket must refuse)."""
    path = base / "nri.sock"
    if kind == "file":
        path.write_text("")
    else:
        path.mkdir()
    return path


def sample_create_request(size: int = 4400, index: int = 0) -> api.CreateContainerRequest:
    """A CreateContainer request shaped like a Kubernetes one, about `size` bytes."""
    pod = api.PodSandbox(
        id=f"{index:064x}",
        name=f"pod-{index}",
        uid="5f2b6e2e-0d9c-4a6e-9a8b-3c9f0d1e2f3a",
        namespace="default",
        labels={"app": "demo", "pod-template-hash": "7d4b9c8f6"},
        annotations={
            "kubernetes.io/config.seen": "2026-11-29T05:00:00.000000000Z",
            "kubernetes.io/config.source": "api",
            "io.kubernetes.cri.container-type": "sandbox",
        },
        runtime_handler="runc",
        linux=api.LinuxPodSandbox(cgroup_parent="/kubepods/besteffort", cgroups_path="/kubepods"),
        pid=4242,
    )
    ctr = api.Container(
        id=f"{index + 1:064x}",
        pod_sandbox_id=pod.id,
        name=f"ctr-{index}",
        state=api.CONTAINER_CREATED,
        labels={"io.kubernetes.container.name": "main", "io.kubernetes.pod.name": pod.name},
        annotations={"io.kubernetes.cri.container-type": "container"},
        args=["/bin/sh", "-c", "sleep 3600"],
        env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=vm"],
    )
    for dest in ("/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup"):
        ctr.mounts.add(destination=dest, type="bind", source=dest, options=["nosuid", "noexec"])
    for ns in ("pid", "ipc", "uts", "mount", "network"):
        ctr.linux.namespaces.add(type=ns, path=f"/proc/4242/ns/{ns}")
    req = api.CreateContainerRequest(pod=pod, container=ctr)
    n = 0
    while req.ByteSize() < size:
        req.container.env.append(f"KUBERNETES_SERVICE_VAR_{n}=10.96.0.{n % 250}")
        n += 1
    return req
