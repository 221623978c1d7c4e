"""How a plugin finds the runtime and names itself: the default socket, the environment of a
pre-installed plugin, and the rules for plugin names and indexes (NRI's, checked before
RegisterPlugin so that a bad value fails at start with a clear message, not at the runtime).
"""

from __future__ import annotations

import re

DEFAULT_SOCKET = "/var/run/nri/nri.sock"
"""containerd's default NRI socket (`[plugins."io.containerd.nri.v1.nri"] socket_path`)."""

ENV_SOCKET, ENV_NAME, ENV_IDX = "NRI_PLUGIN_SOCKET", "NRI_PLUGIN_NAME", "NRI_PLUGIN_IDX"
"""What the runtime sets for a plugin it launches itself: the inherited socket's fd, the name
and the index."""

# NRI 0.12 restricts plugin names to these characters; older runtimes accept them too.
_NAME = re.compile(r"[A-Za-z0-9_.+-]+\Z")
_IDX = re.compile(r"[0-9]{2}\Z")


def name_error(name: str) -> str | None:
    """Why `name` cannot be a plugin name, or None."""
    if _NAME.match(name):
        return None
    return "letters, digits, '-', '_', '.', '+'"


def idx_error(idx: str) -> str | None:
    """Why `idx` cannot be a plugin index, or None."""
    if _IDX.match(idx):
        return None
    return "exactly two digits, 00-99"
