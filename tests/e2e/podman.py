"""A private podman for e2e tests: its own storage and run dirs under a temp dir (vfs, cgroupfs,
file events), images imported from offline layers (tests/e2e/image.py), never a registry.

Two releases: bookworm's podman 4.3 (/usr/bin/podman) and trixie's 5.4 (tests/e2e/install.sh),
which finds netavark through `helper_binaries_dir` in a containers.conf of its own and runs
containers with `--network none` (its default bridge needs nftables). `Podman.of(version,
base)` gives one with the busybox image; `run(specs, devices, command)` runs a CDI request
with only the given spec files visible: podman reads /etc/cdi and /var/run/cdi, so each run
gets a private mount namespace with a tmpfs over both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from tests.e2e import paths
from tests.e2e.image import build_layer

# The sandbox's inherited limits are below podman's defaults (consumers-measured.md).
ULIMITS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")
IMAGE = "localhost/gpu-cdi-e2e/busybox:latest"


@attrs.frozen
class PodmanRelease:
    """One podman the tests can run."""

    version: str
    exe: Path
    helpers: Path | None  # containers.conf helper_binaries_dir (netavark), None: built-in
    # newest cdiVersion its CDI library loads (older libraries skip newer spec files)
    max_cdi_version: str
    package: str  # for messages


PODMAN_RELEASES = {
    r.version: r
    for r in (
        PodmanRelease("4.3", Path("/usr/bin/podman"), None, "0.5.0", "bookworm podman"),
        PodmanRelease("5.4", paths.PODMAN5, paths.PODMAN5_HELPERS, "0.8.0", "trixie podman 5.4"),
    )
}
PODMAN_VERSIONS = tuple(PODMAN_RELEASES)


def podman_release(version: str) -> PodmanRelease:
    """The release for a version of PODMAN_VERSIONS; ValueError names the known ones."""
    return paths.release_of(PODMAN_RELEASES, "podman", version)


def missing_message(version: str) -> str | None:
    """None when this podman can run, else one line naming what is missing."""
    release = podman_release(version)
    miss = []
    if not os.access(release.exe, os.X_OK):
        miss.append(f"{release.exe} ({release.package})")
    if release.helpers is not None and not os.access(release.helpers / "netavark", os.X_OK):
        miss.append(f"{release.helpers / 'netavark'} (trixie netavark)")
    if paths.busybox_path() is None:
        miss.append("/bin/busybox (busybox-static)")
    for tool in ("unshare", "conmon", "runc"):
        if shutil.which(tool) is None:
            miss.append(f"{tool} on PATH")
    if not miss:
        return None
    return f"podman {version}: missing {', '.join(miss)}; {paths.INSTALL_HINT}"


class PodmanError(RuntimeError):
    """A podman command failed; the message holds its stderr."""


class Podman:
    """`podman` (the binary `exe`) with everything it keeps under `base`.

    `helpers`: the directory of netavark & co. when they are not where podman looks by default
    (podman 5.4 from install.sh); `release`: set by `Podman.of`.
    """

    def __init__(self, exe: str, base: Path, *, helpers: Path | None = None) -> None:
        self.exe = exe
        self.base = base
        self.release: PodmanRelease | None = None
        self.flags = [
            "--root", str(base / "store"), "--runroot", str(base / "run"),
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
        ]  # fmt: skip
        self.env: dict[str, str] | None = None  # None: inherit
        if helpers is not None:
            base.mkdir(parents=True, exist_ok=True)
            conf = base / "containers.conf"
            conf.write_text(f'[engine]\nhelper_binaries_dir = ["{helpers}"]\n', encoding="utf-8")
            self.env = {
                **os.environ,
                "CONTAINERS_CONF": str(conf),
                "PODMAN_IGNORE_CGROUPSV1_WARNING": "1",
            }

    @classmethod
    def of(cls, version: str, base: Path) -> Podman:
        """A podman of release `version` (PODMAN_VERSIONS) with the busybox image `IMAGE`."""
        release = podman_release(version)
        podman = cls(str(release.exe), base, helpers=release.helpers)
        podman.release = release
        podman.import_layer(build_layer(), IMAGE)
        return podman

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `podman ARGS` (with this instance's flags); PodmanError when it fails."""
        proc = subprocess.run(
            [self.exe, *self.flags, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env,
        )
        if check and proc.returncode != 0:
            raise PodmanError(f"podman {' '.join(args[:2])} failed: {proc.stderr.strip()}")
        return proc

    def version(self) -> str:
        """What `podman --version` says, e.g. `podman version 5.4.2`."""
        return self("--version").stdout.strip()

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

    def run(
        self,
        specs: Sequence[Path],
        devices: Sequence[str],
        command: str,
        *,
        options: Sequence[str] = (),
        image: str = IMAGE,
    ) -> subprocess.CompletedProcess[str]:
        """`podman run --rm --device D... IMAGE sh -c COMMAND` with `specs` as the only CDI
        specs (in /etc/cdi and /var/run/cdi of a private mount namespace); never raises."""
        devices_args = [arg for device in devices for arg in ("--device", device)]
        argv = [self.exe, *self.flags, "run"]
        argv += self.run_args(
            image, ["sh", "-c", command], options=["--rm", *devices_args, *options]
        )
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", _WITH_SPECS, "sh",
             *map(str, specs), "--", *argv],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )  # fmt: skip


# sh -c _WITH_SPECS sh SPEC... -- COMMAND...: the specs alone in the CDI dirs, then COMMAND
_WITH_SPECS = (
    "set -e; mkdir -p /run/cdi; mount -t tmpfs gpu-cdi-test /run/cdi; "
    "if [ -d /etc/cdi ]; then mount -t tmpfs gpu-cdi-test /etc/cdi; fi; "
    'while [ "$1" != -- ]; do cp "$1" /run/cdi/; shift; done; shift; exec "$@"'
)
