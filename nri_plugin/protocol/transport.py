"""The NRI connection over asyncio: socket I/O around the sans-I/O mux and ttrpc layers.

One `NriTransport` owns one stream socket to the runtime. It serves the runtime's calls on
mux connection 1 (a handler that answers at once is answered inline; one that has to wait
runs in its own task, under the deadline the request carries) and makes our calls on mux
connection 2 (`call`, answers matched by stream id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from nri_plugin.protocol import mux, ttrpc
from nri_plugin.protocol.errors import (
    Code,
    ConnectionClosed,
    MessageTooLarge,
    ProtocolError,
    RpcError,
)

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 256
"""Runtime requests handled at once. Requests beyond it wait, and reading from the socket
pauses until they can start, so tasks and buffered requests stay bounded."""


class Reply(NamedTuple):
    """What to answer a request with: a payload, or a non-zero status code and message."""

    payload: bytes = b""
    code: int = 0
    message: str = ""


Handler = Callable[[ttrpc.RequestReceived], bytes | Reply | Awaitable[Reply]]
"""Answers a runtime request: at once with a success's payload (bytes) or a Reply, or with
an awaitable run in a task under the request's deadline."""


def _internal_error(req: ttrpc.RequestReceived, exc: Exception) -> Reply:
    log.error("unexpected error serving %s/%s", req.service, req.method, exc_info=exc)
    return Reply(code=Code.INTERNAL, message=f"{type(exc).__name__}: {exc}")


RECEIVE_BUFFER = 64 * 1024
"""Bytes read from the socket at once (into one buffer reused for every read)."""


class NriTransport(asyncio.BufferedProtocol):
    """asyncio protocol for one plugin-to-runtime socket.

    A buffered protocol: asyncio reads into our one buffer. A plain Protocol gets a new bytes
    object per read, sized for 256 KiB: allocating and faulting in that memory was about half
    of what the process spent on a request.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._mux = mux.Mux()
        self._server = ttrpc.TtrpcConnection(ttrpc.Role.SERVER)
        self._client = ttrpc.TtrpcConnection(ttrpc.Role.CLIENT)
        self._calls: dict[int, asyncio.Future[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._backlog: deque[ttrpc.RequestReceived] = deque()  # at most one read's worth
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[Exception | None] = self._loop.create_future()
        """Resolves when the socket is gone, to the error that ended it (None for EOF/close)."""
        self._reading_paused = False
        self._writing_paused = False
        self._receive_view = memoryview(bytearray(RECEIVE_BUFFER))

    # -- construction --------------------------------------------------------------------

    @classmethod
    async def connect(cls, path: str, handler: Handler) -> NriTransport:
        """Connect to the runtime's NRI socket at `path`."""
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_unix_connection(lambda: cls(handler), path)
        return proto

    @classmethod
    async def from_socket(cls, sock: socket.socket, handler: Handler) -> NriTransport:
        """Use an already connected stream socket (e.g. inherited from the runtime)."""
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        _, proto = await loop.create_unix_connection(lambda: cls(handler), sock=sock)
        return proto

    @property
    def peer_pid(self) -> int | None:
        """The pid of the process at the other end (SO_PEERCRED), None when unknown.

        0 (a peer outside this pid namespace) is unknown too.
        """
        sock = self._transport.get_extra_info("socket") if self._transport else None
        if sock is None or sock.family != socket.AF_UNIX:
            return None
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return None
        pid: int = struct.unpack("3i", creds)[0]
        return pid or None

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._receive_view

    def buffer_updated(self, nbytes: int) -> None:
        # no copy: the mux copies what it passes on, and nothing keeps the view
        self.data_received(self._receive_view[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        try:
            for chunk in self._mux.receive_data(data):
                if chunk.conn_id == mux.PLUGIN_SERVICE_CONN:
                    for event in self._server.receive_data(chunk.data):
                        self._on_server_event(event)
                else:
                    for event in self._client.receive_data(chunk.data):
                        self._on_client_event(event)
        except ProtocolError as exc:
            log.error("protocol error from the runtime, closing the connection: %s", exc)
            self._abort(exc)

    def eof_received(self) -> bool | None:
        return False  # close our side too: NRI has no half-closed state

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._finish(exc)

    def pause_writing(self) -> None:
        # The runtime is not reading: stop taking new requests until it catches up.
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()

    # -- serving the runtime's calls -----------------------------------------------------

    def _on_server_event(self, event: ttrpc.Event) -> None:
        if isinstance(event, ttrpc.RequestRejected):
            log.warning(
                "rejecting runtime request on stream %d: %s", event.stream_id, event.message
            )
            self._write(mux.PLUGIN_SERVICE_CONN, self._server.send_rejection(event))
        elif isinstance(event, ttrpc.RequestReceived):
            if len(self._tasks) < MAX_IN_FLIGHT:
                self._start(event)  # (which updates reading if it starts a task)
            else:
                self._backlog.append(event)
                self._update_reading()

    def _start(self, req: ttrpc.RequestReceived) -> None:
        try:
            result = self._handler(req)
        except Exception as exc:  # the stub turns handler errors into replies; this is a bug
            result = _internal_error(req, exc)
        # Answered without suspending: no task, no extra trip through the event loop.
        if isinstance(result, bytes):
            self._reply(req.stream_id, result)
            return
        if isinstance(result, Reply):
            self._reply(req.stream_id, *result)
            return
        task = self._loop.create_task(self._serve(req, result))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        self._update_reading()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        while self._backlog and len(self._tasks) < MAX_IN_FLIGHT and self._transport is not None:
            self._start(self._backlog.popleft())
        self._update_reading()

    async def _serve(self, req: ttrpc.RequestReceived, pending: Awaitable[Reply]) -> None:
        try:
            if req.timeout_nano > 0:
                async with asyncio.timeout(req.timeout_nano / 1e9):
                    reply = await pending
            else:
                reply = await pending
        except TimeoutError:
            reply = Reply(
                code=Code.DEADLINE_EXCEEDED,
                message=f"{req.method}: deadline of {req.timeout_nano / 1e9:.3f}s exceeded",
            )
            log.warning("%s/%s missed its deadline", req.service, req.method)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reply = _internal_error(req, exc)
        self._reply(req.stream_id, *reply)

    def _reply(self, stream_id: int, payload: bytes, code: int = 0, message: str = "") -> None:
        if self._transport is None:
            return
        try:
            parts = self._server.response_parts(stream_id, payload, code=code, message=message)
        except MessageTooLarge as exc:
            parts = self._server.response_parts(
                stream_id, code=Code.RESOURCE_EXHAUSTED, message=str(exc)
            )
        self._write_parts(mux.PLUGIN_SERVICE_CONN, *parts)

    # -- our calls to the runtime --------------------------------------------------------

    async def call(self, service: str, method: str, payload: bytes, timeout: float) -> bytes:
        """Call `service/method` on the runtime; returns the response payload.

        Raises RpcError (non-OK status, or DEADLINE_EXCEEDED after `timeout` seconds) or
        ConnectionClosed.
        """
        if self._transport is None or self.closed.done():
            raise ConnectionClosed("not connected to the runtime")
        stream_id, data = self._client.send_request(
            service, method, payload, timeout_nano=int(timeout * 1e9)
        )
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._calls[stream_id] = fut
        self._write(mux.RUNTIME_SERVICE_CONN, data)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise RpcError(
                Code.DEADLINE_EXCEEDED, f"{service}/{method}: no answer within {timeout:.3f}s"
            ) from None
        finally:
            self._calls.pop(stream_id, None)
            self._client.forget(stream_id)

    def _on_client_event(self, event: ttrpc.Event) -> None:
        if not isinstance(event, ttrpc.ResponseReceived):
            return
        fut = self._calls.get(event.stream_id)
        if fut is None or fut.done():
            return
        if event.code:
            fut.set_exception(RpcError(event.code, event.message))
        else:
            fut.set_result(event.payload)

    # -- plumbing ------------------------------------------------------------------------

    def _write(self, conn_id: int, message: bytes) -> None:
        self._write_parts(conn_id, b"", message)

    def _write_parts(self, conn_id: int, head: bytes, body: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._mux.frame_parts(conn_id, head, body))

    def _update_reading(self) -> None:
        if self._transport is None:
            return
        busy = self._writing_paused or bool(self._backlog) or len(self._tasks) >= MAX_IN_FLIGHT
        if busy and not self._reading_paused:
            self._transport.pause_reading()
            self._reading_paused = True
        elif not busy and self._reading_paused:
            self._transport.resume_reading()
            self._reading_paused = False

    def _abort(self, exc: Exception) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._finish(exc)

    def _finish(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        lost = ConnectionClosed(f"connection to the runtime lost: {exc or 'EOF'}")
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(lost)
        self._backlog.clear()
        for task in list(self._tasks):
            task.cancel()

    @property
    def in_flight(self) -> int:
        """Runtime requests currently being handled."""
        return len(self._tasks)

    def close(self) -> None:
        """Close the socket; pending calls fail with ConnectionClosed, handlers are cancelled."""
        if self._transport is not None:
            self._transport.close()
        self._finish(None)

    async def wait_closed(self) -> None:
        """Wait until the socket is gone and every handler task has ended."""
        await asyncio.shield(self.closed)
        if self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._tasks, return_exceptions=True)
