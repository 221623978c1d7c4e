"""NRI's connection multiplexer, sans I/O.

One stream socket carries several logical byte streams. Each frame is an 8-byte header,
connection id and payload length (both uint32 big-endian), then the payload. Frame
boundaries mean nothing to the logical streams: a receiver concatenates payloads per id.

`Mux.receive_data(bytes)` returns the logical-stream chunks found in the input, passing
payload bytes through as they arrive, so its own buffer never holds more than a header.
`Mux.frame(conn_id, message)` returns the frames for one upper-layer message, split so no
payload exceeds what containerd's reader accepts (4096 bytes).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from nri_plugin.protocol.errors import MuxError

HEADER = struct.Struct(">II")
HEADER_SIZE = HEADER.size
PLUGIN_SERVICE_CONN = 1
"""Logical connection on which the runtime calls the plugin (plugin is the ttrpc server)."""
RUNTIME_SERVICE_CONN = 2
"""Logical connection on which the plugin calls the runtime (runtime is the ttrpc server)."""
# containerd reads each logical connection through a 4096-byte bufio.Reader; a larger queued
# frame fails its read with ENOMEM and drops the plugin.
MAX_SEND_PAYLOAD = 4096
# NRI v0.6.1's writer refuses larger payloads, so a bigger length can only be garbage.
MAX_RECV_PAYLOAD = 1 << 24


class Chunk(NamedTuple):
    """Bytes of logical connection `conn_id`, in order."""

    conn_id: int
    data: bytes


class _LastFrames:
    """The frames of the last multi-frame message, for a message that repeats."""

    __slots__ = ("body", "framed", "key", "template")

    def __init__(self, body: bytes, key: tuple[int, int], framed: bytes) -> None:
        self.body = body  # (kept: identity, not equality, is checked)
        self.key = key  # connection id, length of the head
        self.framed = framed
        self.template: bytearray | None = None  # made at the first repeat


class Mux:
    """Frame and deframe the multiplexer's byte stream."""

    def __init__(
        self,
        conn_ids: tuple[int, ...] = (PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN),
        *,
        max_send_payload: int = MAX_SEND_PAYLOAD,
        max_recv_payload: int = MAX_RECV_PAYLOAD,
    ) -> None:
        if max_send_payload < 1:
            raise ValueError(f"max_send_payload must be positive, got {max_send_payload}")
        self._conn_ids = frozenset(conn_ids)
        self._max_send = max_send_payload
        self._max_recv = max_recv_payload
        self._header = b""
        self._conn = 0
        self._remaining = 0  # payload bytes of the current frame still to come
        self._last_frames: _LastFrames | None = None
        self.dropped_bytes = 0
        """Payload bytes of frames for connection ids nobody listens on (Go drops them too)."""

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for more input (at most one partial header)."""
        return len(self._header)

    def receive_data(self, data: bytes | memoryview) -> list[Chunk]:
        """Feed bytes read from the socket; returns the logical-stream chunks they complete."""
        out: list[Chunk] = []
        view = memoryview(data)
        pos, end = 0, len(data)
        conn, remaining = self._conn, self._remaining
        run: list[memoryview] = []  # payload slices of `run_conn`, adjacent in the stream
        run_conn = 0
        while True:
            if remaining:
                take = min(remaining, end - pos)
                if conn in self._conn_ids:
                    if conn != run_conn and run:
                        out.append(Chunk(run_conn, _joined(run)))
                        run = []
                    run_conn = conn
                    run.append(view[pos : pos + take])
                else:
                    self.dropped_bytes += take
                remaining -= take
                pos += take
            if pos >= end:
                break
            if not self._header and end - pos >= HEADER_SIZE:
                conn, remaining = HEADER.unpack_from(data, pos)
                pos += HEADER_SIZE
            else:
                need = HEADER_SIZE - len(self._header)
                self._header += bytes(view[pos : pos + need])
                pos += min(need, end - pos)
                if len(self._header) < HEADER_SIZE:
                    break
                conn, remaining = HEADER.unpack(self._header)
                self._header = b""
            if remaining > self._max_recv:
                self._conn, self._remaining = conn, 0
                raise MuxError(
                    f"mux frame for connection {conn} announces {remaining} payload bytes, "
                    f"more than the limit of {self._max_recv}"
                )
        self._conn, self._remaining = conn, remaining
        if run:
            out.append(Chunk(run_conn, _joined(run)))
        return out

    def frame(self, conn_id: int, message: bytes) -> bytes:
        """Frames carrying `message` on `conn_id`, none with more than the send limit."""
        return self.frame_parts(conn_id, b"", message)

    def frame_parts(self, conn_id: int, head: bytes, body: bytes) -> bytes:
        """Frames carrying `head` then `body` (e.g. a ttrpc header and a payload) on
        `conn_id`, none with more than the send limit: both are copied once."""
        if not 0 < conn_id <= 0xFFFFFFFF:
            raise ValueError(f"mux connection id must be 1..2^32-1, got {conn_id}")
        size = len(head) + len(body)
        if size <= self._max_send:
            return b"".join((HEADER.pack(conn_id, size), head, body))
        step = self._max_send
        first = step - len(head)  # body bytes in the first frame
        if first <= 0:  # (a head too long to share a frame: not what ttrpc sends)
            return self.frame_parts(conn_id, b"", head + body)
        # Large answers repeat (a plugin's cached answer, the same bytes object): the frames
        # of the last one are kept, and only the head (a ttrpc header: the stream id) is
        # written anew. Same bytes; one copy instead of slicing and joining.
        last = self._last_frames
        if last is not None and last.body is body and last.key == (conn_id, len(head)):
            template = last.template
            if template is None:
                template = last.template = bytearray(last.framed)
            template[HEADER_SIZE : HEADER_SIZE + len(head)] = head
            return bytes(template)
        view = memoryview(body)  # slices without copies: join copies once
        out: list[bytes | memoryview] = [HEADER.pack(conn_id, step), head, view[:first]]
        for start in range(first, len(view), step):
            piece = view[start : start + step]
            out += (HEADER.pack(conn_id, len(piece)), piece)
        framed = b"".join(out)
        if type(body) is bytes:  # (immutable: the same object holds the same bytes)
            self._last_frames = _LastFrames(body, (conn_id, len(head)), framed)
        return framed


def _joined(parts: list[memoryview]) -> bytes:
    """The bytes of adjacent payload slices of one connection, copied once."""
    return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)
