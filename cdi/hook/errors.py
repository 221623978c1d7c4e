"""The one exception type of the hook program: its message is the line the runtime shows."""

from __future__ import annotations


class HookError(Exception):
    """A user-facing failure: `str(err)` is one line naming the path and the reason."""

    def __init__(self, message: str) -> None:
        # The runtime prints hook stderr verbatim; keep every error on one line.
        super().__init__(" ".join(message.split()))


class UsageError(HookError):
    """Bad command line: unknown action or flag, missing or malformed value."""
