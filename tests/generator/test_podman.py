"""podman 4.3 (Debian bookworm's) takes a `--cdi-version 0.5.0` spec, hooks and all, and
rejects nvidia-ctk's default 0.7.0 (issue 8). podman 4.3 reads only /etc/cdi and /var/run/cdi,
so each run gets a private mount namespace with a tmpfs over /run/cdi: the host is untouched."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.generator.hosts import INVENTORIES, Hosts, gpu_cdi
from tests.require import need, need_root, need_tool

BUSYBOX = Path("/bin/busybox")
IMAGE = "localhost/gpu-cdi-test/busybox:latest"


class Podman:
    """podman with its own storage under a temp dir, and a busybox image in it."""

    def __init__(self, base: Path) -> None:
        self.exe = need_tool("podman")
        self.base = base
        self.flags = [
            "--root", str(base / "store"), "--runroot", str(base / "run"),
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
        ]  # fmt: skip
        rootfs = base / "rootfs.tar"
        with tarfile.open(rootfs, "w") as tar:
            tar.add(BUSYBOX, "bin/busybox")
            for applet in ("sh", "ls", "id"):
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
        subprocess.run(
            [self.exe, *self.flags, "import", str(rootfs), IMAGE],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def run(self, spec: Path, device: str, command: str) -> subprocess.CompletedProcess[str]:
        """`podman run --device DEVICE` with `spec` as the only CDI spec."""
        script = (
            "set -e; mkdir -p /run/cdi; mount -t tmpfs gpu-cdi-test /run/cdi; "
            f'cp "{spec}" /run/cdi/; exec "$@"'
        )
        # The sandbox's inherited limits are below podman's defaults (consumers-measured.md).
        limits = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
        argv = [self.exe, *self.flags, "run", "--rm", "--network", "none", *limits]
        argv += ["--device", device, IMAGE, "sh", "-c", command]
        unshare = need_tool("unshare")
        return subprocess.run(
            [unshare, "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    need_root()
    need(BUSYBOX.is_file(), "needs /bin/busybox (Debian busybox-static)")
    exe = need_tool("podman")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    need(" 4." in version, f"needs podman 4.x (bookworm's /usr/bin/podman), found {version!r}")
    return Podman(tmp_path_factory.mktemp("podman"))


def test_podman_4_takes_cdi_version_0_5_0(podman: Podman, hosts: Hosts, tmp_path: Path) -> None:
    host = hosts.get("dgx-a100")
    inventory = str(INVENTORIES / "dgx-a100.yaml")
    hook = Path(sys.executable).parent  # the console script beside the test's python
    need((hook / "gpu-cdi-hook").is_file(), f"gpu-cdi-hook not installed in {hook}")
    common = ["generate", "--inventory", inventory, "--driver-root", str(host.driver_root)]
    common += ["--hook-path", str(hook / "gpu-cdi-hook")]
    old = tmp_path / "old" / "nvidia.yaml"
    proc = gpu_cdi([*common, "--cdi-version", "0.5.0", "--output", str(old)])
    assert proc.returncode == 0, proc.stderr

    show = "ls /dev; ls -l /dev/dri/by-path /usr/lib/x86_64-linux-gnu/libcuda.so; id"
    run = podman.run(old, "nvidia.com/gpu=0", show)
    assert run.returncode == 0, run.stderr
    assert "nvidia0" in run.stdout.split() and "nvidiactl" in run.stdout.split()
    assert "nvidia1" not in run.stdout.split()
    # The chained gpu-cdi-hook ran: DRM by-path links and driver library links exist.
    assert "pci-0000:07:00.0-card -> ../card1" in run.stdout
    assert "libcuda.so -> libcuda.so.1" in run.stdout
    assert "groups=" not in run.stdout  # no additionalGids at 0.5.0

    new = tmp_path / "new" / "nvidia.yaml"
    assert gpu_cdi([*common, "--output", str(new)]).returncode == 0
    rejected = podman.run(new, "nvidia.com/gpu=0", "true")
    assert rejected.returncode != 0
    assert "unresolvable CDI devices nvidia.com/gpu=0" in rejected.stderr
