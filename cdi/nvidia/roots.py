"""Where discovery finds a node: the inputs `gpu-cdi generate`, `gpu-cdi inventory` and the
device plugin share (their flags: `cdi.nvidia.commands.add_discovery_flags`).

Every root is a path *on the node*, and that is how paths are written into a spec. Only
`host_root` is a path of this process's filesystem: where the node's `/` is mounted (`/` when
running on the node itself, `/host` in a container with the node's `/` mounted there). Each
root is read at `host_root` + its path with symlinks resolved inside the mount (an absolute link
to /usr/lib means <host_root>/usr/lib; `..` stops at the mount), so a spec written in such a
container is byte for byte the one the node itself would write.
"""

from __future__ import annotations

import os

import attrs

from cdi.frozen import Frozen
from cdi.nvidia import rootpath as rp


class RootError(ValueError):
    """A root is missing or not a directory; one line naming the flag, the path and where."""


@attrs.frozen(repr=False, eq=False, match_args=False, slots=False)
class Local(Frozen):
    """The node's roots as paths of this filesystem: where discovery reads."""

    driver: str
    dev: str
    proc_sys: str


def _dev_default(roots: Roots) -> str:
    return roots.driver_root


@attrs.frozen(repr=False, eq=False, match_args=False, slots=False)
class Roots(Frozen):
    """Where a node's driver, /dev, /proc and /sys are, and where the node is mounted here.

    driver_root: the driver's root on the node (`/`, or `/run/nvidia/driver` for a driver
    container); host paths in the spec keep it, container paths drop it.
    dev_root: the root of the node's /dev nodes (default: the driver root, as nvidia-ctk).
    host_root: where the node's `/` is in this filesystem (`/host` in a DaemonSet).
    proc_sys_root: the root of the /proc and /sys GPUs are looked up in (`/`; a fake host's).
    library_search_paths: extra library directories, inside the driver root.
    """

    driver_root: str = "/"
    dev_root: str = attrs.field(default=attrs.Factory(_dev_default, takes_self=True))
    host_root: str = "/"
    proc_sys_root: str = "/"
    library_search_paths: tuple[str, ...] = ()

    @property
    def mounted(self) -> bool:
        """True when the node is read through a mount (not run on the node itself)."""
        return self.host_root != "/"

    def where(self, path: str) -> str:
        """Where node path `path` would be read (for messages; no symlink is resolved)."""
        return rp.host(self.host_root, path)

    def locate(self) -> Local:
        """Where each root is in this filesystem; RootError when one is not a directory."""
        if not os.path.isdir(self.host_root):
            state = "not a directory" if os.path.exists(self.host_root) else "no such directory"
            raise RootError(
                f"--host-root {self.host_root}: {state} (where the node's / should be mounted "
                "in this container, e.g. a hostPath volume of / at /host)"
            )
        return Local(
            self._directory("--driver-root", self.driver_root),
            self._directory("--dev-root", self.dev_root),
            self._directory("--proc-sys-root", self.proc_sys_root),
        )

    def _directory(self, flag: str, path: str) -> str:
        found = rp.local(self.host_root, path)
        if found is not None and os.path.isdir(found):
            return found
        state = "no such directory" if found is None else "not a directory"
        if self.mounted:
            state += f" on the node mounted at {self.host_root} (looked at {self.where(path)})"
        raise RootError(f"{flag} {path}: {state}")
