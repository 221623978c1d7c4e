"""ttrpc framing and stream bookkeeping, sans I/O.

A ttrpc message is a 10-byte header (data length uint32, stream id uint32, message type
uint8, flags uint8; big-endian) followed by the data: a protobuf `ttrpc.Request` or
`ttrpc.Response`. Only the client opens streams, with odd ids that grow; each unary call is
one Request and one Response on the same stream id, and responses may come in any order.

`TtrpcConnection(role)` takes the bytes of one logical connection through `receive_data`
and returns events; `send_request` / `send_response` return the bytes to write. Problems
that concern one stream become events for that stream (the Go server answers them with a
status); only garbage that makes the byte stream unparseable raises `TtrpcError`.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple, NoReturn

from google.protobuf.message import DecodeError

from nri_plugin.protocol.errors import Code, MessageTooLarge, TtrpcError
from nri_plugin.protocol.gen import ttrpc_pb2

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size
MAX_DATA = 4 << 20
"""Largest data length ttrpc sends or accepts (4 MiB)."""


class MessageType(enum.IntEnum):
    """ttrpc message types."""

    REQUEST = 1
    RESPONSE = 2
    DATA = 3


_REQUEST, _RESPONSE = int(MessageType.REQUEST), int(MessageType.RESPONSE)


class Role(enum.Enum):
    """Which side of the calls on this logical connection we are."""

    CLIENT = "client"
    SERVER = "server"


class RequestReceived(NamedTuple):
    """A call from the peer (server role); answer it with `send_response(stream_id, ...)`."""

    stream_id: int
    service: str
    method: str
    payload: bytes
    timeout_nano: int
    metadata: tuple[tuple[str, str], ...]


class RequestRejected(NamedTuple):
    """A call that cannot be served (server role); answer it with this status."""

    stream_id: int
    code: int
    message: str


class ResponseReceived(NamedTuple):
    """The answer to one of our calls (client role); `code` 0 means OK."""

    stream_id: int
    code: int
    message: str
    payload: bytes


Event = RequestReceived | RequestRejected | ResponseReceived


class TtrpcConnection:
    """One ttrpc connection, either side."""

    def __init__(self, role: Role, *, max_data: int = MAX_DATA) -> None:
        self.role = role
        self._serving = role is Role.SERVER  # (a plain bool: tested for every message)
        self._max_data = max_data
        self._buf = bytearray()
        self._discard = 0  # bytes of an oversized message still to skip
        self._next_stream = 1  # client: next id to allocate
        self._last_seen = 0  # server: highest request id accepted so far
        self._pending: set[int] = set()  # client: calls awaiting a response
        self._open: set[int] = set()  # server: requests not answered yet
        self.ignored_messages = 0
        """Messages dropped as meaningless here (stray responses, data frames, unknown types)."""

    @property
    def buffered(self) -> int:
        """Bytes of a partial message held until the rest arrives (at most header + limit)."""
        return len(self._buf)

    @property
    def pending(self) -> frozenset[int]:
        """Client: stream ids of calls still waiting for a response."""
        return frozenset(self._pending)

    @property
    def open_requests(self) -> frozenset[int]:
        """Server: stream ids of requests not answered yet."""
        return frozenset(self._open)

    # -- receiving -----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes of this logical connection; returns the events they complete."""
        events: list[Event] = []
        if self._discard:
            skip = min(self._discard, len(data))
            self._discard -= skip
            data = data[skip:]
        buf = self._buf
        if buf:  # the rest of a partial message
            buf += data
            data = bytes(buf)
            buf.clear()
        # parsed in place: only a partial message at the end is copied, to wait for the rest
        view = memoryview(data)
        pos = self._parse(view, events)
        if pos < len(view):
            buf += view[pos:]
        return events

    def _parse(self, view: memoryview, events: list[Event]) -> int:
        """Dispatch the whole messages at the start of `view`; returns the bytes consumed."""
        pos = 0
        size = len(view)
        while size - pos >= HEADER_SIZE:
            length, stream_id, mtype, _flags = HEADER.unpack_from(view, pos)
            if length > self._max_data:
                pos += HEADER_SIZE
                skip = min(length, size - pos)
                pos += skip
                self._discard = length - skip
                self._oversized(stream_id, mtype, length, events)
                continue
            end = pos + HEADER_SIZE + length
            if end > size:
                break
            self._dispatch(stream_id, mtype, view[pos + HEADER_SIZE : end], events)
            pos = end
        return pos

    def _oversized(self, stream_id: int, mtype: int, length: int, events: list[Event]) -> None:
        message = f"message length {length} exceed maximum message size of {self._max_data}"
        if self.role is Role.SERVER and mtype == MessageType.REQUEST:
            if self._accept_stream(stream_id, events):
                events.append(RequestRejected(stream_id, Code.RESOURCE_EXHAUSTED, message))
        elif (
            self.role is Role.CLIENT
            and mtype == MessageType.RESPONSE
            and stream_id in self._pending
        ):
            self._pending.discard(stream_id)
            events.append(ResponseReceived(stream_id, Code.RESOURCE_EXHAUSTED, message, b""))
        else:
            self.ignored_messages += 1

    def _dispatch(self, stream_id: int, mtype: int, body: memoryview, events: list[Event]) -> None:
        if self._serving and mtype == _REQUEST:
            if stream_id & 1 and stream_id > self._last_seen:  # _accept_stream's usual case
                self._last_seen = stream_id
                self._open.add(stream_id)
            elif not self._accept_stream(stream_id, events):
                return
            try:
                req = ttrpc_pb2.Request.FromString(body)  # type: ignore[arg-type]  # any buffer
            except DecodeError as exc:
                events.append(
                    RequestRejected(
                        stream_id, Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}"
                    )
                )
                return
            metadata = tuple((kv.key, kv.value) for kv in req.metadata) if req.metadata else ()
            events.append(
                RequestReceived(
                    stream_id, req.service, req.method, req.payload, req.timeout_nano, metadata
                )
            )
        elif not self._serving and mtype == _RESPONSE:
            if stream_id not in self._pending:
                self.ignored_messages += 1
                return
            self._pending.discard(stream_id)
            try:
                resp = ttrpc_pb2.Response.FromString(body)  # type: ignore[arg-type]
            except DecodeError as exc:
                events.append(
                    ResponseReceived(
                        stream_id, Code.UNKNOWN, f"unmarshal response error: {exc}", b""
                    )
                )
                return
            status = resp.status
            events.append(ResponseReceived(stream_id, status.code, status.message, resp.payload))
        else:
            self.ignored_messages += 1

    def _accept_stream(self, stream_id: int, events: list[Event]) -> bool:
        """Server: apply ttrpc's stream id rules; reject the request if they are broken."""
        if stream_id % 2 == 0:
            events.append(
                RequestRejected(
                    stream_id,
                    Code.INVALID_ARGUMENT,
                    "StreamID must be odd for client initiated streams",
                )
            )
            return False
        if stream_id <= self._last_seen or stream_id in self._open:
            events.append(
                RequestRejected(
                    stream_id,
                    Code.INVALID_ARGUMENT,
                    "StreamID cannot be re-used and must increment",
                )
            )
            return False
        self._last_seen = stream_id
        self._open.add(stream_id)
        return True

    # -- sending -------------------------------------------------------------------------

    def send_request(
        self,
        service: str,
        method: str,
        payload: bytes = b"",
        *,
        timeout_nano: int = 0,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> tuple[int, bytes]:
        """Client: a new call; returns its stream id and the bytes to write, in id order."""
        if self.role is not Role.CLIENT:
            raise TtrpcError("only the client side of a ttrpc connection sends requests")
        req = ttrpc_pb2.Request(
            service=service, method=method, payload=payload, timeout_nano=timeout_nano
        )
        for key, value in metadata:
            req.metadata.add(key=key, value=value)
        data = req.SerializeToString()
        if len(data) > self._max_data:
            self._too_large(len(data), f"request {service}/{method}")
        stream_id = self._next_stream
        if stream_id > 0xFFFFFFFF:
            raise TtrpcError("ttrpc stream ids exhausted on this connection")
        self._next_stream += 2
        self._pending.add(stream_id)
        return stream_id, HEADER.pack(len(data), stream_id, MessageType.REQUEST, 0) + data

    def forget(self, stream_id: int) -> None:
        """Client: stop waiting for a call (e.g. its deadline passed); a late answer is ignored."""
        self._pending.discard(stream_id)

    def send_response(
        self, stream_id: int, payload: bytes = b"", *, code: int = 0, message: str = ""
    ) -> bytes:
        """Server: the answer to request `stream_id`; an error status when `code` is not 0."""
        return b"".join(self.response_parts(stream_id, payload, code=code, message=message))

    def response_parts(
        self, stream_id: int, payload: bytes = b"", *, code: int = 0, message: str = ""
    ) -> tuple[bytes, bytes]:
        """`send_response`'s bytes in two pieces, the header (with the Response's fields but
        the payload) and the payload, to be copied once by whoever frames them (the mux)."""
        if not self._serving:
            raise TtrpcError("only the server side of a ttrpc connection sends responses")
        if stream_id not in self._open:
            raise TtrpcError(f"stream {stream_id} has no request waiting for an answer")
        return self._response(stream_id, payload, code, message)

    def send_rejection(self, rejected: RequestRejected) -> bytes:
        """Server: the error answer to a `RequestRejected` event."""
        if not self._serving:
            raise TtrpcError("only the server side of a ttrpc connection sends responses")
        return b"".join(self._response(rejected.stream_id, b"", rejected.code, rejected.message))

    def _response(
        self, stream_id: int, payload: bytes, code: int, message: str
    ) -> tuple[bytes, bytes]:
        if code:
            resp = ttrpc_pb2.Response(payload=payload)
            resp.status.code = code
            resp.status.message = message
            head, body = resp.SerializeToString(), b""
        elif payload:
            # Response(payload=payload) without the protobuf call: field 2 (wire type 2, tag
            # 0x12) and its length; the payload itself is left for the framer's one copy
            head, body = b"\x12" + _varint(len(payload)), payload
        else:
            head = body = b""
        size = len(head) + len(body)
        if size > self._max_data:
            self._too_large(size, f"response on stream {stream_id}")
        self._open.discard(stream_id)
        return HEADER.pack(size, stream_id, _RESPONSE, 0) + head, body

    def _too_large(self, size: int, what: str) -> NoReturn:
        raise MessageTooLarge(
            f"{what} is {size} bytes, more than ttrpc's limit of {self._max_data}"
        )


def _varint(value: int) -> bytes:
    if value < 0x4000:  # (every answer but the largest: one or two bytes, without a loop)
        return bytes((value,)) if value < 0x80 else bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
