"""NRI (containerd's Node Resource Interface) for Python plugins, with no GPU knowledge.

Layers, each importing only the ones before it: `errors`; `gen` (protobuf messages generated
from specs/nri); `mux` and `ttrpc` (sans-I/O framing); `transport` (asyncio socket);
`stub` (registration, events, reconnection). Plugins need only what is re-exported here.
"""

from nri_plugin.protocol.errors import Code, ConnectionClosed, ProtocolError, RpcError
from nri_plugin.protocol.gen import api_pb2 as api
from nri_plugin.protocol.stub import Plugin, Stub, run_plugin

__all__ = [
    "Code",
    "ConnectionClosed",
    "Plugin",
    "ProtocolError",
    "RpcError",
    "Stub",
    "api",
    "run_plugin",
]
