"""Errors of the NRI protocol layers, and the gRPC status codes ttrpc carries."""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """gRPC status codes as ttrpc puts them in Response.status.code."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def code_name(code: int) -> str:
    """Symbolic name of a status code, or the number for codes outside the table."""
    try:
        return Code(code).name
    except ValueError:
        return str(code)


class ProtocolError(Exception):
    """The peer broke the wire protocol; the whole connection is unusable."""


class MuxError(ProtocolError):
    """A multiplexer frame the protocol does not allow."""


class TtrpcError(ProtocolError):
    """A ttrpc frame the protocol does not allow."""


class MessageTooLarge(ValueError):
    """A message to send exceeds the ttrpc size limit; nothing was sent."""


MAX_MESSAGE = 4096
"""Characters of a status message kept. The runtime hands the message to the CRI caller
(kubelet puts it in the pod's events); a huge one fails that hand-over as a whole."""


def bounded(message: str, limit: int = MAX_MESSAGE) -> str:
    """`message`, cut to `limit` characters (saying so) if it is longer."""
    if len(message) <= limit:
        return message
    kept = limit - 48  # room for the note (at most 42 characters)
    return f"{message[:kept]}... ({len(message) - kept} more characters)"


class RpcError(Exception):
    """A call ended with a non-OK status, or a handler wants to answer with one.

    Raise it from a plugin handler to choose the code the runtime (and so the CRI caller)
    sees; any other exception is answered with `Code.UNKNOWN`. The message is `bounded`.
    """

    def __init__(self, code: int, message: str) -> None:
        message = bounded(message)
        super().__init__(f"{code_name(code)}: {message}")
        self.code = int(code)
        self.message = message


class ConnectionClosed(Exception):
    """The connection to the runtime is gone (EOF, reset, or closed locally)."""
