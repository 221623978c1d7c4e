"""Random, truncated and hostile input for the sans-I/O layers (hypothesis).

Whatever arrives, only a ProtocolError may escape, and what a layer holds back stays bounded.
"""

from __future__ import annotations

import itertools
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nri_plugin.protocol.errors import ProtocolError
from nri_plugin.protocol.gen import ttrpc_pb2
from nri_plugin.protocol.mux import HEADER_SIZE, Mux
from nri_plugin.protocol.ttrpc import (
    HEADER_SIZE as TTRPC_HEADER,
)
from nri_plugin.protocol.ttrpc import (
    RequestReceived,
    RequestRejected,
    ResponseReceived,
    Role,
    TtrpcConnection,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_LIMIT = 512  # a small ttrpc limit so oversized paths are hit often


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def ttrpc_header(length: int, stream: int, mtype: int, flags: int = 0) -> bytes:
    return struct.pack(">IIBB", length, stream, mtype, flags)


# Byte strings that look like the protocol often enough to get past the first header.
message = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda n, s, t, body: ttrpc_header(n, s, t) + body,
        st.integers(0, 2 * SMALL_LIMIT),
        st.integers(0, 2**32 - 1),
        st.integers(0, 255),
        st.binary(max_size=80),
    ),
    st.builds(
        lambda s, t, m, p: (lambda b: ttrpc_header(len(b), s, t) + b)(
            ttrpc_pb2.Request(
                service="nri.pkg.api.v1alpha1.Plugin", method=m, payload=p
            ).SerializeToString()
        ),
        st.integers(0, 40),
        st.sampled_from([1, 2, 3]),
        st.text(max_size=10),
        st.binary(max_size=40),
    ),
)
hostile_stream = st.lists(message, max_size=20).map(b"".join)


@FUZZ
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 4000), max_size=20))
def test_mux_random_bytes(data: bytes, cuts: list[int]) -> None:
    mux = Mux(max_recv_payload=1000)
    try:
        for piece in chunked(data, cuts):
            mux.receive_data(piece)
            assert mux.buffered < HEADER_SIZE
    except ProtocolError:
        pass


@FUZZ
@given(
    frames=st.lists(st.tuples(st.sampled_from([1, 2]), st.binary(max_size=300)), max_size=12),
    max_send=st.integers(1, 100),
    cuts=st.lists(st.integers(0, 5000), max_size=30),
)
def test_mux_round_trip_any_split(
    frames: list[tuple[int, bytes]], max_send: int, cuts: list[int]
) -> None:
    tx = Mux(max_send_payload=max_send)
    wire = b"".join(tx.frame(conn, payload) for conn, payload in frames)
    rx = Mux()
    got = {1: b"", 2: b""}
    for piece in chunked(wire, cuts):
        for chunk in rx.receive_data(piece):
            got[chunk.conn_id] += chunk.data
    assert got == {c: b"".join(p for cc, p in frames if cc == c) for c in (1, 2)}


@FUZZ
@given(
    data=hostile_stream,
    cuts=st.lists(st.integers(0, 5000), max_size=20),
    role=st.sampled_from(Role),
)
def test_ttrpc_hostile_input(data: bytes, cuts: list[int], role: Role) -> None:
    conn = TtrpcConnection(role, max_data=SMALL_LIMIT)
    if role is Role.CLIENT:
        for _ in range(20):
            conn.send_request("svc", "M")
    try:
        for piece in chunked(data, cuts):
            for event in conn.receive_data(piece):
                if isinstance(event, RequestRejected):
                    conn.send_rejection(event)
                elif isinstance(event, RequestReceived):
                    conn.send_response(event.stream_id, b"ok")
                else:
                    assert isinstance(event, ResponseReceived)
            # what is held back is one incomplete message within the limit
            assert conn.buffered < TTRPC_HEADER + SMALL_LIMIT
    except ProtocolError:
        pass


@FUZZ
@given(
    calls=st.lists(
        st.tuples(st.text(max_size=20), st.binary(max_size=600)), min_size=1, max_size=8
    ),
    order=st.randoms(use_true_random=False),
    cuts=st.lists(st.integers(0, 20000), max_size=30),
)
def test_ttrpc_calls_round_trip_in_any_order(
    calls: list[tuple[str, bytes]], order: object, cuts: list[int]
) -> None:
    client = TtrpcConnection(Role.CLIENT)
    server = TtrpcConnection(Role.SERVER)
    wire = b""
    sent: dict[int, tuple[str, bytes]] = {}
    for method, payload in calls:
        sid, data = client.send_request("svc", method, payload, timeout_nano=5)
        sent[sid] = (method, payload)
        wire += data
    received = []
    for piece in chunked(wire, cuts):
        received += server.receive_data(piece)
    assert [(e.stream_id, e.method, e.payload) for e in received] == [
        (sid, m, p) for sid, (m, p) in sent.items()
    ]
    order.shuffle(received)  # type: ignore[attr-defined]
    answers = b"".join(server.send_response(e.stream_id, e.payload[::-1]) for e in received)
    got = {}
    for piece in chunked(answers, cuts):
        for event in client.receive_data(piece):
            assert isinstance(event, ResponseReceived)
            got[event.stream_id] = event.payload
    assert got == {sid: p[::-1] for sid, (_, p) in sent.items()}
    assert client.pending == frozenset()


@FUZZ
@given(data=hostile_stream, cuts=st.lists(st.integers(0, 5000), max_size=20))
def test_mux_and_ttrpc_stacked(data: bytes, cuts: list[int]) -> None:
    """Hostile ttrpc bytes spread over valid mux frames of random sizes."""
    tx = Mux(max_send_payload=37)
    wire = tx.frame(1, data) + tx.frame(2, data[::-1])
    rx = Mux()
    conns = {1: TtrpcConnection(Role.SERVER, max_data=SMALL_LIMIT), 2: TtrpcConnection(Role.CLIENT)}
    try:
        for piece in chunked(wire, cuts):
            for chunk in rx.receive_data(piece):
                conns[chunk.conn_id].receive_data(chunk.data)
    except ProtocolError:
        pass


def test_atheris_fuzzer_runs_clean() -> None:
    """The coverage-guided fuzzer (tests/nri/fuzz_atheris.py) finds nothing in a short run."""
    import subprocess
    import sys

    import pytest

    pytest.importorskip("atheris")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.nri.fuzz_atheris", "-runs=30000", "-seed=1"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 30000 runs" in proc.stderr
