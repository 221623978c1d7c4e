"""A private Docker 28 daemon (Debian sid's docker.io, tests/e2e/install.sh) for CDI tests.

dockerd runs with its own data root, exec root, socket and `--cdi-spec-dir` under one tmpfs
directory (/run/gpu-cdi-e2e/docker-<pid>-<random>/), with no bridge and no iptables, and starts
its own containerd (sid's 2.1 from install.sh) and runc from the host. Docker resolves CDI
names itself from 25 on (`docker run --device vendor/class=name`); 28.2+ has it on by default.

    cdi/        the CDI spec dir (--cdi-spec-dir)
    data/ exec/ dockerd --data-root / --exec-root (its containerd lives in exec/containerd)
    docker.sock dockerd.log daemon.json rootfs.tar
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.e2e import paths
from tests.e2e.harness import (
    BASE_ROOT,
    HarnessError,
    mountpoints_under,
    pid_alive,
    procs_with_arg,
)
from tests.e2e.image import build_layer

IMAGE = "gpu-cdi-e2e/busybox:latest"
PREFIX = "docker-"


def missing_message() -> str | None:
    """None when the daemon can run, else one line naming what is missing."""
    miss = [
        f"{exe} (sid docker.io/docker-cli)"
        for exe in (paths.DOCKERD, paths.DOCKER)
        if not os.access(exe, os.X_OK)
    ]
    if not os.access(paths.CONTAINERD2_BIN / "containerd", os.X_OK):
        miss.append(f"{paths.CONTAINERD2_BIN / 'containerd'} (sid containerd)")
    if shutil.which("runc") is None:
        miss.append("runc on PATH")
    if paths.busybox_path() is None:
        miss.append("/bin/busybox (busybox-static)")
    if not miss:
        return None
    return f"docker: missing {', '.join(miss)}; {paths.INSTALL_HINT}"


def _teardown(base: Path) -> None:
    # dockerd, its containerd and the shims all name a path under base
    for pid in procs_with_arg(str(base) + "/", within=True):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for mnt in sorted(mountpoints_under(base), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def sweep_stale() -> None:
    """Remove daemon dirs of test sessions that died."""
    if BASE_ROOT.is_dir():
        for d in BASE_ROOT.glob(PREFIX + "*"):
            owner = d.name[len(PREFIX) :].split("-", 1)[0]
            if owner.isdigit() and not pid_alive(int(owner)):
                _teardown(d)


class Dockerd:
    """One private dockerd (see the module docstring); `close()` removes everything."""

    def __init__(self, start_timeout: float = 60.0) -> None:
        if msg := missing_message():
            raise HarnessError(msg)
        BASE_ROOT.mkdir(parents=True, exist_ok=True)
        sweep_stale()
        self.base = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=BASE_ROOT))
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0711", "gpu-cdi-e2e", str(self.base)],
            capture_output=True,
        )
        self.cdi_dir = self.base / "cdi"
        self.cdi_dir.mkdir()
        self.socket = self.base / "docker.sock"
        self.log_path = self.base / "dockerd.log"
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            # dockerd finds containerd, docker-init and docker-proxy on PATH
            "PATH": os.pathsep.join(
                map(
                    str,
                    (
                        paths.CONTAINERD2_BIN,
                        paths.DOCKER.parent,
                        paths.DOCKERD.parent,
                        os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                    ),
                )
            ),
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.base / "client"),
        }

    def start(self) -> Dockerd:
        """Start dockerd, wait for its API, import the busybox image."""
        (self.base / "daemon.json").write_text("{}\n")  # not /etc/docker/daemon.json
        argv = [
            str(paths.DOCKERD),
            "--config-file", str(self.base / "daemon.json"),
            "--data-root", str(self.base / "data"),
            "--exec-root", str(self.base / "exec"),
            "--pidfile", str(self.base / "docker.pid"),
            "--host", f"unix://{self.socket}",
            "--bridge=none", "--iptables=false", "--ip6tables=false",
            "--exec-opt", "native.cgroupdriver=cgroupfs",
            "--cdi-spec-dir", str(self.cdi_dir),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + self.start_timeout
        while self.docker("version", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
                raise HarnessError(f"dockerd did not come up (log {self.log_path}):\n{tail}")
            time.sleep(0.2)
        rootfs = self.base / "rootfs.tar"
        rootfs.write_bytes(build_layer())
        self.docker("import", str(rootfs), IMAGE)
        return self

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` against this daemon; RuntimeError with stderr when check fails."""
        proc = subprocess.run(
            [str(paths.DOCKER), *args], capture_output=True, text=True, env=self.env, timeout=120
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def run(
        self, devices: Sequence[str], command: str, *, args: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        """`docker run --rm --network none --device D... IMAGE sh -c COMMAND` (`args` go
        before the image); CDI specs come from `cdi_dir`."""
        argv = ["run", "--rm", "--network", "none", *args]
        for device in devices:
            argv += ["--device", device]
        return self.docker(*argv, IMAGE, "sh", "-c", command, check=False)

    def close(self) -> None:
        """Stop dockerd (it stops its containerd), then remove every trace."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        _teardown(self.base)

    def __enter__(self) -> Dockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
