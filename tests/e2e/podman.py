"""podman 4.3 (bookworm's /usr/bin/podman) and 5.4 (trixie's, tests/e2e/install.sh) as CDI
consumers, with private storage and an offline busybox image.

podman reads CDI specs only from /etc/cdi and /var/run/cdi, so each run gets a private mount
namespace with a tmpfs over both holding just the given spec files: the host is untouched
and runs cannot see each other's specs. The sandbox's inherited limits are below podman's
default rlimits, hence `default_ulimits` (reference/consumers-measured.md §1.0); podman 5 finds
netavark through `helper_binaries_dir` and runs containers with `--network none` (the default
bridge needs nftables).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import attrs

from tests.e2e import paths
from tests.e2e.image import build_layer

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


class Podman:
    """One podman release with its own storage under `base` and the busybox image in it."""

    def __init__(self, version: str, base: Path) -> None:
        self.release = podman_release(version)
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        conf = base / "containers.conf"
        lines = [
            "[containers]",
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]',
            "[engine]",
            'events_logger = "file"',
            'cgroup_manager = "cgroupfs"',
        ]
        if self.release.helpers is not None:
            lines.append(f'helper_binaries_dir = ["{self.release.helpers}"]')
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(conf),
            "PODMAN_IGNORE_CGROUPSV1_WARNING": "1",
        }
        self.flags = [
            "--root", str(base / "store"), "--runroot", str(base / "run"),
            "--storage-driver", "vfs",
        ]  # fmt: skip
        rootfs = base / "rootfs.tar"
        rootfs.write_bytes(build_layer())
        self.podman("import", str(rootfs), IMAGE)

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`podman ARGS` with this instance's storage and config."""
        proc = subprocess.run(
            [str(self.release.exe), *self.flags, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def version(self) -> str:
        """What `podman --version` says, e.g. `podman version 5.4.2`."""
        return self.podman("--version").stdout.strip()

    def run(
        self,
        specs: Sequence[Path],
        devices: Sequence[str],
        command: str,
        *,
        args: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        """`podman run --rm --device D... IMAGE sh -c COMMAND` with `specs` as the only CDI
        specs (in /var/run/cdi of a private mount namespace); `args` go before the image."""
        argv = [str(self.release.exe), *self.flags, "run", "--rm", "--network", "none", *args]
        for device in devices:
            argv += ["--device", device]
        argv += [IMAGE, "sh", "-c", command]
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", _WITH_SPECS, "sh",
             *map(str, specs), "--", *argv],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )  # fmt: skip


# sh -c _WITH_SPECS sh SPEC... -- COMMAND...: the specs alone in /run/cdi, then COMMAND
_WITH_SPECS = (
    "set -e; mkdir -p /run/cdi; mount -t tmpfs gpu-cdi-test /run/cdi; "
    "if [ -d /etc/cdi ]; then mount -t tmpfs gpu-cdi-test /etc/cdi; fi; "
    'while [ "$1" != -- ]; do cp "$1" /run/cdi/; shift; done; shift; exec "$@"'
)
