"""Device health: why each GPU or MIG device is unhealthy, shared by the NVML watcher (which
writes it) and every ListAndWatch stream and Allocate (which read it).

A device is unhealthy while it, or the GPU it lives on, has at least one cause. Causes are
keyed, so each clears on its own: `xid` stays (as in NVIDIA's plugin: an XID that needs
attention needs a person), `lost` (a GPU NVML does not find) clears when NVML finds it again,
`watch` when its events can be registered, `nvml` when NVML answers again, `discovery` (NVML
failed on the GPU at discovery, so the spec lacks it) when a discovery goes through.

Which XIDs count follows NVIDIA's plugin: the application errors 13, 31, 43, 45, 68 and 109 are
skipped; `DP_DISABLE_HEALTHCHECKS` (`all`, `xids`, or XID numbers) adds to them and
`DP_ENABLE_HEALTHCHECKS` (`all`, `xids` or numbers) takes from them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence

import attrs

from device_plugin.config import ConfigError

SKIPPED_XIDS = frozenset({13, 31, 43, 45, 68, 109})
ALL_INSTANCES = 0xFFFFFFFF  # NVML's gpuInstanceId/computeInstanceId for "the whole GPU"
# What the XIDs an operator meets most often mean, for the log line.
XID_MEANING = {
    48: "double-bit ECC error",
    62: "internal micro-controller halt",
    63: "ECC page retirement or row remapping",
    64: "ECC page retirement or row remapping failure",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
}


def xid_text(xid: int) -> str:
    """`XID 79 (GPU has fallen off the bus)`."""
    meaning = XID_MEANING.get(xid)
    return f"XID {xid}" + (f" ({meaning})" if meaning else "")


@attrs.frozen
class XidPolicy:
    """Which NVML XID events make a device unhealthy."""

    enabled: bool = True  # False: no health checks at all
    all_xids: bool = False  # True: every XID counts, none skipped
    no_xids: bool = False  # True: XIDs never count
    skipped: frozenset[int] = SKIPPED_XIDS

    def critical(self, xid: int) -> bool:
        """Whether XID `xid` marks devices unhealthy."""
        if self.no_xids:
            return False
        return self.all_xids or xid not in self.skipped

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> XidPolicy:
        """The policy NVIDIA's environment variables ask for; ConfigError on a bad value."""
        disable = _words("DP_DISABLE_HEALTHCHECKS", environ)
        enable = _words("DP_ENABLE_HEALTHCHECKS", environ)
        skipped = set(SKIPPED_XIDS) | _numbers("DP_DISABLE_HEALTHCHECKS", disable)
        skipped -= _numbers("DP_ENABLE_HEALTHCHECKS", enable)
        return cls(
            enabled="all" not in disable,
            all_xids=bool({"all", "xids"} & enable),
            no_xids="xids" in disable,
            skipped=frozenset(skipped),
        )


def _words(name: str, environ: Mapping[str, str]) -> set[str]:
    return {w.strip().lower() for w in environ.get(name, "").split(",") if w.strip()}


def _numbers(name: str, words: Iterable[str]) -> set[int]:
    out = set()
    for word in words:
        if word in ("all", "xids"):
            continue
        if not word.isdigit():
            raise ConfigError(
                f"environment: {name}: {word!r} is not an XID number, 'xids' or 'all'"
            )
        out.add(int(word))
    return out


@attrs.frozen
class MigRef:
    """A MIG device as NVML events name it: its GPU's UUID plus GPU/compute instance ids."""

    uuid: str
    gi: int
    ci: int


def affected(gpu_uuid: str, gi: int, ci: int, migs: Sequence[MigRef]) -> list[str]:
    """UUIDs an event on GPU `gpu_uuid` with instance ids `gi`/`ci` hits: the MIG devices of
    that instance, or the whole GPU (and so every device on it)."""
    if gi == ALL_INSTANCES or not migs:
        return [gpu_uuid]
    hit = [m.uuid for m in migs if m.gi == gi and ci in (ALL_INSTANCES, m.ci)]
    return hit or [gpu_uuid]


class Board:
    """Causes of ill health by UUID; every change bumps `version` and wakes the waiters."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._causes: dict[str, dict[str, str]] = {}
        self.version = 0

    def mark(self, uuid: str, cause: str, why: str) -> bool:
        """Record `cause` for `uuid`; True when the device was healthy before."""
        with self._changed:
            causes = self._causes.setdefault(uuid, {})
            was_healthy = not causes
            if causes.get(cause) == why:
                return False
            causes[cause] = why
            self._bump()
            return was_healthy

    def clear(self, uuid: str, cause: str) -> bool:
        """Drop `cause` for `uuid`; True when that made the device healthy."""
        with self._changed:
            causes = self._causes.get(uuid)
            if not causes or cause not in causes:
                return False
            del causes[cause]
            self._bump()
            return not causes

    def why(self, *uuids: str) -> str | None:
        """Why the first unhealthy of `uuids` is unhealthy, or None if all are healthy."""
        with self._changed:
            for uuid in uuids:
                causes = self._causes.get(uuid)
                if causes:
                    return "; ".join(causes.values())
        return None

    def has(self, uuid: str, cause: str) -> bool:
        """Whether `uuid` carries `cause`."""
        with self._changed:
            return cause in self._causes.get(uuid, {})

    def wait(self, version: int, timeout: float) -> int:
        """Block until `version` is stale (or `timeout`, or `wake`); the current version."""
        with self._changed:
            if self.version == version:
                self._changed.wait(timeout)
            return self.version

    def wake(self) -> None:
        """Wake every waiter (on shutdown)."""
        with self._changed:
            self._changed.notify_all()

    def _bump(self) -> None:
        self.version += 1
        self._changed.notify_all()
