"""NRI (containerd's Node Resource Interface) for Python plugins, with no GPU knowledge.

Layers, each importing only the ones before it: `errors`, `registration` (names, socket);
`gen` (protobuf messages generated from specs/nri); `mux` and `ttrpc` (sans-I/O framing);
`transport` (asyncio socket); `stub` (registration, events, reconnection). Plugins need only
what is re-exported here. The stub, asyncio and the protobuf messages load on first use, so
that importing `registration` (a plugin's config does) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nri_plugin.protocol.errors import Code, ConnectionClosed, ProtocolError, RpcError

if TYPE_CHECKING:
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

_LAZY = {
    "api": ("nri_plugin.protocol.gen.api_pb2", None),
    "Plugin": ("nri_plugin.protocol.stub", "Plugin"),
    "Stub": ("nri_plugin.protocol.stub", "Stub"),
    "run_plugin": ("nri_plugin.protocol.stub", "run_plugin"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value
