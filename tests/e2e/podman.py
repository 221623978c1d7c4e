"""A private podman for e2e tests: its own storage and run dirs under a temp dir (vfs, cgroupfs,
file events), images imported from offline layers (tests/e2e/image.py), never a registry."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

# The sandbox's inherited limits are below podman's defaults (consumers-measured.md).
ULIMITS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")


class PodmanError(RuntimeError):
    """A podman command failed; the message holds its stderr."""


class Podman:
    """`podman` (the binary `exe`) with everything it keeps under `base`."""

    def __init__(self, exe: str, base: Path) -> None:
        self.exe = exe
        self.base = base
        self.flags = [
            "--root", str(base / "store"), "--runroot", str(base / "run"),
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
        ]  # fmt: skip

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `podman ARGS` (with this instance's flags); PodmanError when it fails."""
        proc = subprocess.run(
            [self.exe, *self.flags, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise PodmanError(f"podman {' '.join(args[:2])} failed: {proc.stderr.strip()}")
        return proc

    def import_layer(self, layer: bytes, ref: str) -> str:
        """Import a rootfs tar (one uncompressed layer) as image `ref`; returns `ref`."""
        path = self.base / (ref.replace("/", "_").replace(":", "_") + ".tar")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(layer)
        self("import", str(path), ref)
        return ref

    def run_args(
        self,
        image: str,
        command: Sequence[str],
        *,
        volumes: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        options: Sequence[str] = (),
    ) -> list[str]:
        """The `podman run` arguments (after `run`) for `command` in `image`."""
        args = ["--network", "none", *ULIMITS, *options]
        for volume in volumes:
            args += ["--volume", volume]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        return [*args, image, *command]
