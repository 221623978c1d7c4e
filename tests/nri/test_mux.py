"""Multiplexer framing: round trips, splitting, reassembly, hostile headers."""

from __future__ import annotations

import struct

import pytest

from nri_plugin.protocol.errors import MuxError, ProtocolError
from nri_plugin.protocol.mux import MAX_RECV_PAYLOAD, Chunk, Mux


def frames_of(data: bytes) -> list[tuple[int, bytes]]:
    """Split a byte string into (conn id, payload) frames, independently of Mux."""
    out = []
    while data:
        conn, length = struct.unpack(">II", data[:8])
        out.append((conn, data[8 : 8 + length]))
        data = data[8 + length :]
    return out


def test_frame_matches_worked_example_header() -> None:
    # nri-protocol.md §2.5: a 77-byte RegisterPlugin message on conn 2.
    framed = Mux().frame(2, b"x" * 77)
    assert framed[:8] == bytes.fromhex("00000002 0000004d")
    assert framed[8:] == b"x" * 77


def test_round_trip_small() -> None:
    mux = Mux()
    assert mux.receive_data(mux.frame(1, b"hello")) == [Chunk(1, b"hello")]


@pytest.mark.parametrize("size", [4095, 4096, 4097, 8192, 8193, 20_000, 100_000])
def test_send_splits_at_4096(size: int) -> None:
    message = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    framed = Mux().frame(1, message)
    frames = frames_of(framed)
    assert all(len(p) <= 4096 for _, p in frames)
    assert all(c == 1 for c, _ in frames)
    assert b"".join(p for _, p in frames) == message
    assert len(frames) == -(-size // 4096)
    got = Mux().receive_data(framed)
    assert b"".join(c.data for c in got) == message


def test_exactly_4096_is_one_frame() -> None:
    assert len(frames_of(Mux().frame(2, b"a" * 4096))) == 1


def test_receive_byte_by_byte_reassembles() -> None:
    tx = Mux()
    stream = tx.frame(1, b"first") + tx.frame(2, b"second") + tx.frame(1, b"x" * 5000)
    rx = Mux()
    got: dict[int, bytes] = {1: b"", 2: b""}
    for i in range(len(stream)):
        for chunk in rx.receive_data(stream[i : i + 1]):
            got[chunk.conn_id] += chunk.data
        assert rx.buffered < 8
    assert got == {1: b"first" + b"x" * 5000, 2: b"second"}


def test_adjacent_frames_of_one_conn_are_merged_in_order() -> None:
    tx = Mux(max_send_payload=3)
    got = Mux().receive_data(tx.frame(1, b"abcdefgh") + tx.frame(2, b"xy") + tx.frame(1, b"ij"))
    assert got == [Chunk(1, b"abcdefgh"), Chunk(2, b"xy"), Chunk(1, b"ij")]


def test_unknown_connection_ids_are_dropped() -> None:
    rx = Mux()
    data = struct.pack(">II", 7, 3) + b"abc" + struct.pack(">II", 0, 2) + b"zz"
    data += struct.pack(">II", 1, 2) + b"ok"
    assert rx.receive_data(data) == [Chunk(1, b"ok")]
    assert rx.dropped_bytes == 5


def test_empty_frame_yields_nothing() -> None:
    assert Mux().receive_data(struct.pack(">II", 1, 0)) == []


def test_oversized_frame_is_a_protocol_error() -> None:
    rx = Mux()
    with pytest.raises(MuxError, match=f"{MAX_RECV_PAYLOAD + 1} payload bytes"):
        rx.receive_data(struct.pack(">II", 1, MAX_RECV_PAYLOAD + 1))
    assert issubclass(MuxError, ProtocolError)


def test_large_frame_within_limit_streams_without_buffering() -> None:
    rx = Mux()
    size = MAX_RECV_PAYLOAD
    got = rx.receive_data(struct.pack(">II", 2, size) + b"a" * 1000)
    assert got == [Chunk(2, b"a" * 1000)]
    assert rx.buffered == 0


def test_frame_rejects_bad_conn_id() -> None:
    with pytest.raises(ValueError, match="connection id"):
        Mux().frame(0, b"x")
    with pytest.raises(ValueError, match="max_send_payload"):
        Mux(max_send_payload=0)


@pytest.mark.parametrize("size", [0, 1, 4086, 4096, 4097, 12_949, 20_000])
@pytest.mark.parametrize("cut", [0, 1, 10, 13, 4095, 4096, 4097])
def test_frame_parts_is_frame_of_the_concatenation(size: int, cut: int) -> None:
    message = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    head, body = message[:cut], message[cut:]
    assert Mux().frame_parts(1, head, body) == Mux().frame(1, message)
    small = Mux(max_send_payload=7)
    assert small.frame_parts(2, head, body) == Mux(max_send_payload=7).frame(2, message)


def test_a_repeated_message_is_framed_anew_around_a_new_head() -> None:
    """The frames of a repeated large message are reused: only its head changes."""
    tx, fresh = Mux(), Mux()
    answer = bytes(range(256)) * 50
    same_content = bytes(bytearray(answer))
    calls = [
        (1, b"head-1", answer),
        (1, b"head-2", answer),
        (1, b"head-3", answer),
        (1, b"longer head", answer),
        (2, b"longer head", answer),
        (2, b"head-4", answer[:-1]),
        (2, b"head-5", same_content),
        (2, b"", same_content),
    ]
    for conn_id, head, body in calls:
        assert tx.frame_parts(conn_id, head, body) == fresh.frame(conn_id, head + body)
