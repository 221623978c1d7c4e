"""Coverage-guided fuzzing of mux + ttrpc with atheris (libFuzzer).

    python -m tests.nri.fuzz_atheris -runs=100000      # or -max_total_time=60

The first input byte picks the target (mux, ttrpc server, ttrpc client, both stacked), the
second how the rest is cut into reads. Anything but a ProtocolError is a finding, as is a
layer holding back more than one incomplete frame.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from nri_plugin.protocol.errors import ProtocolError
    from nri_plugin.protocol.mux import HEADER_SIZE, Mux
    from nri_plugin.protocol.ttrpc import (
        HEADER_SIZE as TTRPC_HEADER,
    )
    from nri_plugin.protocol.ttrpc import (
        RequestReceived,
        RequestRejected,
        Role,
        TtrpcConnection,
    )

LIMIT = 1024


def _feed_ttrpc(conn: TtrpcConnection, piece: bytes) -> None:
    for event in conn.receive_data(piece):
        if isinstance(event, RequestRejected):
            conn.send_rejection(event)
        elif isinstance(event, RequestReceived):
            conn.send_response(event.stream_id, event.payload)
    if conn.buffered >= TTRPC_HEADER + LIMIT:
        raise AssertionError(f"ttrpc holds {conn.buffered} bytes")


def test_one_input(data: bytes) -> None:
    """libFuzzer entry point."""
    if len(data) < 2:
        return
    target, step, body = data[0] % 4, data[1] % 64 + 1, data[2:]
    pieces = [body[i : i + step] for i in range(0, len(body), step)]
    mux = Mux(max_recv_payload=4 * LIMIT)
    server = TtrpcConnection(Role.SERVER, max_data=LIMIT)
    client = TtrpcConnection(Role.CLIENT, max_data=LIMIT)
    for _ in range(8):
        client.send_request("svc", "M")
    try:
        for piece in pieces:
            if target == 0:
                mux.receive_data(piece)
                if mux.buffered >= HEADER_SIZE:
                    raise AssertionError(f"mux holds {mux.buffered} bytes")
            elif target == 1:
                _feed_ttrpc(server, piece)
            elif target == 2:
                _feed_ttrpc(client, piece)
            else:
                for chunk in mux.receive_data(piece):
                    _feed_ttrpc(server if chunk.conn_id == 1 else client, chunk.data)
    except ProtocolError:
        pass


def main() -> None:
    """Run libFuzzer with the command line arguments."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
