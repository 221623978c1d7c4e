"""`gpu-cdi configure docker`: CDI on in Docker's daemon.json, reading our spec dirs, so that
`docker run --device nvidia.com/gpu=all` works (Docker 25 and later).

Docker 25 to 28.1 need the `cdi` feature (`"features": {"cdi": true}`); from 28.2 it is on by
default and setting it changes nothing. `cdi-spec-dirs` replaces Docker's default list, so a
spec dir is added to the dirs Docker reads now. Key order is kept and the indentation of the
file is reused (JSON has no comments to keep). json is imported when used: `gpu-cdi` builds
its parser, with this module's defaults, on every start.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from cdi.node.configfile import ConfigError, Edit, merged_dirs

DEFAULT_CONFIG = "/etc/docker/daemon.json"
RESTART = "restart Docker (systemctl restart docker)"
_INDENT = r"^\{\s*?\n([ \t]+)\S"  # the first member's indentation


def _load(text: str, source: str) -> dict[str, Any]:
    import json

    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{source}: line {error.lineno}, column {error.colno}: not valid JSON "
            f"({error.msg}); nothing changed"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: holds a JSON {type(data).__name__}, Docker wants an object; nothing changed"
        )
    return data


def _indent(text: str) -> str | int:
    found = re.match(_INDENT, text.lstrip(), re.M)
    return found.group(1) if found else 4


def configure(text: str | None, source: str, spec_dirs: Sequence[str] = ()) -> Edit:
    """daemon.json `text` (None: no file yet) with CDI on and reading `spec_dirs`."""
    import json

    old = text or ""
    data = _load(old, source)
    changes: list[str] = []
    features = data.get("features")
    if features is None:
        features = data["features"] = {}
    if not isinstance(features, dict):
        raise ConfigError(f"{source}: features is a JSON {type(features).__name__}, not an object")
    if features.get("cdi") is not True:
        features["cdi"] = True
        changes.append('CDI enabled ("features": {"cdi": true})')
    current = data.get("cdi-spec-dirs")
    if current is not None and not (
        isinstance(current, list) and all(isinstance(d, str) for d in current)
    ):
        raise ConfigError(f"{source}: cdi-spec-dirs is {json.dumps(current)}, not a list of dirs")
    merged = merged_dirs(current, spec_dirs)
    if merged is not None:
        data["cdi-spec-dirs"], added = merged
        changes.append(f"CDI spec dirs + {added} (cdi-spec-dirs)")
    if not changes:
        return Edit(old, ())
    return Edit(json.dumps(data, indent=_indent(old), ensure_ascii=False) + "\n", tuple(changes))
