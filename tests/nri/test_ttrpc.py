"""ttrpc framing and stream rules, including the byte-exact example of nri-protocol.md §2.5."""

from __future__ import annotations

import struct

import pytest

from nri_plugin.protocol import api
from nri_plugin.protocol.errors import Code, MessageTooLarge, TtrpcError
from nri_plugin.protocol.gen import ttrpc_pb2
from nri_plugin.protocol.ttrpc import (
    MAX_DATA,
    MessageType,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
    Role,
    TtrpcConnection,
)

REGISTER_EXAMPLE = bytes.fromhex(
    "00000043 00000001 01 00"
    "0a1c"
    + b"nri.pkg.api.v1alpha1.Runtime".hex()
    + "120e"
    + b"RegisterPlugin".hex()
    + "1a0d 0a07"
    + b"pyprobe".hex()
    + "1202"
    + b"50".hex()
    + "2080a8d6b907"
)


def frame(stream_id: int, mtype: int, body: bytes, flags: int = 0) -> bytes:
    return struct.pack(">IIBB", len(body), stream_id, mtype, flags) + body


def request_body(method: str = "Configure", payload: bytes = b"", timeout_nano: int = 0) -> bytes:
    return ttrpc_pb2.Request(
        service="nri.pkg.api.v1alpha1.Plugin",
        method=method,
        payload=payload,
        timeout_nano=timeout_nano,
    ).SerializeToString()


def test_register_request_bytes_match_the_wire() -> None:
    client = TtrpcConnection(Role.CLIENT)
    payload = api.RegisterPluginRequest(plugin_name="pyprobe", plugin_idx="50").SerializeToString()
    stream_id, data = client.send_request(
        "nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin", payload, timeout_nano=2_000_000_000
    )
    assert stream_id == 1
    assert data == REGISTER_EXAMPLE


def test_server_parses_the_wire_example() -> None:
    server = TtrpcConnection(Role.SERVER)
    (event,) = server.receive_data(REGISTER_EXAMPLE)
    assert isinstance(event, RequestReceived)
    assert (event.stream_id, event.service, event.method) == (
        1,
        "nri.pkg.api.v1alpha1.Runtime",
        "RegisterPlugin",
    )
    assert event.timeout_nano == 2_000_000_000
    assert api.RegisterPluginRequest.FromString(event.payload).plugin_idx == "50"


def test_response_bytes_match_the_wire() -> None:
    server = TtrpcConnection(Role.SERVER)
    server.receive_data(frame(1, 1, request_body()))
    ok = server.send_response(1, api.ConfigureResponse(events=8).SerializeToString())
    # Go omits an OK status; the payload field is 12 02 10 08 as in §2.5.
    assert ok == bytes.fromhex("00000004 00000001 02 00 1202 1008")
    server.receive_data(frame(3, 1, request_body("Foo")))
    err = server.send_response(3, code=Code.UNIMPLEMENTED, message="method Foo")
    assert err[10:] == bytes.fromhex("0a0e 080c 120a") + b"method Foo"


@pytest.mark.parametrize("size", [0, 1, 0x7F, 0x80, 12_949, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000])
def test_success_response_is_what_protobuf_encodes(size: int) -> None:
    """A success's Response is encoded by hand: byte for byte protobuf's encoding."""
    payload = bytes(range(256)) * (size // 256) + b"p" * (size % 256)
    server = TtrpcConnection(Role.SERVER)
    server.receive_data(frame(1, 1, request_body()))
    parts = server.response_parts(1, payload)
    body = ttrpc_pb2.Response(payload=payload).SerializeToString()
    assert b"".join(parts) == struct.pack(">IIBB", len(body), 1, 2, 0) + body
    server.receive_data(frame(3, 1, request_body()))
    assert server.send_response(3, payload)[10:] == body


def test_client_accepts_empty_and_explicit_ok_status() -> None:
    client = TtrpcConnection(Role.CLIENT)
    s1, _ = client.send_request("svc", "A")
    s3, _ = client.send_request("svc", "B")
    assert (s1, s3) == (1, 3)
    events = client.receive_data(frame(s3, 2, b"\x0a\x00\x12\x02\x10\x08") + frame(s1, 2, b""))
    assert events == [
        ResponseReceived(3, 0, "", b"\x10\x08"),
        ResponseReceived(1, 0, "", b""),
    ]
    assert client.pending == frozenset()


def test_interleaved_out_of_order_responses_match_by_stream_id() -> None:
    client = TtrpcConnection(Role.CLIENT)
    ids = [client.send_request("svc", f"M{i}", bytes([i]))[0] for i in range(5)]
    assert ids == [1, 3, 5, 7, 9]
    data = b"".join(
        frame(sid, 2, ttrpc_pb2.Response(payload=bytes([sid])).SerializeToString())
        for sid in reversed(ids)
    )
    events = []
    for i in range(0, len(data), 7):  # arbitrary chunking across message boundaries
        events += client.receive_data(data[i : i + 7])
    assert [(e.stream_id, e.payload) for e in events if isinstance(e, ResponseReceived)] == [
        (sid, bytes([sid])) for sid in reversed(ids)
    ]


def test_client_error_status_and_stray_responses() -> None:
    client = TtrpcConnection(Role.CLIENT)
    sid, _ = client.send_request("svc", "M")
    body = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=3, message="bad")).SerializeToString()
    stray = frame(99, 2, b"")
    assert client.receive_data(stray + frame(sid, 2, body)) == [
        ResponseReceived(sid, 3, "bad", b"")
    ]
    assert client.receive_data(frame(sid, 2, body)) == []  # a second answer is ignored
    assert client.ignored_messages == 2


def test_forgotten_call_ignores_late_answer() -> None:
    client = TtrpcConnection(Role.CLIENT)
    sid, _ = client.send_request("svc", "M")
    client.forget(sid)
    assert client.receive_data(frame(sid, 2, b"")) == []


def test_server_stream_id_rules() -> None:
    server = TtrpcConnection(Role.SERVER)
    events = server.receive_data(
        frame(2, 1, request_body()) + frame(5, 1, request_body()) + frame(3, 1, request_body())
    )
    assert events[0] == RequestRejected(
        2, Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams"
    )
    assert isinstance(events[1], RequestReceived) and events[1].stream_id == 5
    assert events[2] == RequestRejected(
        3, Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment"
    )
    reply = server.send_rejection(events[0])
    assert reply[:10] == struct.pack(">IIBB", len(reply) - 10, 2, 2, 0)


def test_server_answers_each_request_once() -> None:
    server = TtrpcConnection(Role.SERVER)
    server.receive_data(frame(1, 1, request_body()))
    assert server.open_requests == {1}
    server.send_response(1)
    with pytest.raises(TtrpcError, match="stream 1 has no request waiting"):
        server.send_response(1)
    with pytest.raises(TtrpcError, match="stream 7"):
        server.send_response(7)


def test_undecodable_request_is_rejected_not_fatal() -> None:
    server = TtrpcConnection(Role.SERVER)
    (event,) = server.receive_data(frame(1, 1, b"\xff\xff\xff"))
    assert isinstance(event, RequestRejected)
    assert event.code == Code.INVALID_ARGUMENT
    assert "unmarshal request error" in event.message


def test_undecodable_response_fails_only_that_call() -> None:
    client = TtrpcConnection(Role.CLIENT)
    sid, _ = client.send_request("svc", "M")
    (event,) = client.receive_data(frame(sid, 2, b"\x0a\xff"))
    assert isinstance(event, ResponseReceived)
    assert event.code == Code.UNKNOWN and "unmarshal response" in event.message


def test_oversized_request_is_discarded_and_rejected() -> None:
    server = TtrpcConnection(Role.SERVER)
    size = MAX_DATA + 1
    header = struct.pack(">IIBB", size, 1, MessageType.REQUEST, 0)
    events = server.receive_data(header + b"a" * 1000)
    assert events == [
        RequestRejected(
            1,
            Code.RESOURCE_EXHAUSTED,
            f"message length {size} exceed maximum message size of {MAX_DATA}",
        )
    ]
    assert server.buffered == 0
    # the rest of the oversized body is skipped without being buffered
    assert server.receive_data(b"a" * (size - 1000 - 5)) == []
    assert server.buffered == 0
    events = server.receive_data(b"a" * 5 + frame(3, 1, request_body("Configure")))
    assert [type(e) for e in events] == [RequestReceived]


def test_oversized_response_fails_the_call() -> None:
    client = TtrpcConnection(Role.CLIENT)
    sid, _ = client.send_request("svc", "M")
    (event,) = client.receive_data(struct.pack(">IIBB", MAX_DATA + 1, sid, 2, 0))
    assert event.code == Code.RESOURCE_EXHAUSTED


def test_data_messages_and_unknown_types_are_ignored() -> None:
    server = TtrpcConnection(Role.SERVER)
    events = server.receive_data(frame(1, 3, b"x") + frame(1, 9, b"") + frame(1, 2, b""))
    assert events == []
    assert server.ignored_messages == 3
    assert server.receive_data(frame(1, 1, request_body()))[0].stream_id == 1


def test_send_limits() -> None:
    client = TtrpcConnection(Role.CLIENT)
    with pytest.raises(MessageTooLarge, match="more than ttrpc's limit"):
        client.send_request("svc", "M", b"a" * MAX_DATA)
    assert client.send_request("svc", "M")[0] == 1  # a refused request used no stream id
    server = TtrpcConnection(Role.SERVER)
    server.receive_data(frame(1, 1, request_body()))
    with pytest.raises(MessageTooLarge):
        server.send_response(1, b"a" * MAX_DATA)
    assert server.send_response(1, code=8, message="too big")
    with pytest.raises(TtrpcError):
        server.send_request("svc", "M")
    with pytest.raises(TtrpcError):
        client.send_response(1)


def test_partial_header_and_body_are_buffered_until_complete() -> None:
    server = TtrpcConnection(Role.SERVER)
    data = frame(1, 1, request_body(payload=b"p" * 300))
    assert server.receive_data(data[:5]) == []
    assert server.receive_data(data[5:100]) == []
    assert server.buffered == 100
    (event,) = server.receive_data(data[100:])
    assert event.payload == b"p" * 300
    assert server.buffered == 0
