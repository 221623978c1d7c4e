"""Bundles, rootfs trees and host snapshots for the hook tests."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cdi.hook

HOOK_MAIN = str(Path(cdi.hook.__file__).parent / "__main__.py")
PROJECT = str(Path(__file__).resolve().parents[2])
LIBDIR = "/usr/lib/x86_64-linux-gnu"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


@dataclass(frozen=True)
class Bundle:
    """An OCI bundle on disk: config.json with root.path, and the state the runtime sends."""

    path: Path
    rootfs: Path

    @property
    def state(self) -> bytes:
        state = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 1}
        return json.dumps({**state, "bundle": str(self.path)}).encode()


def oci_device(path: str, major: int, minor: int) -> dict[str, object]:
    """A linux.devices entry as runtimes write it for a character device."""
    return {"path": path, "type": "c", "major": major, "minor": minor, "fileMode": 0o666}


# The device nodes of a one-GPU container (GPU 0 of a dgx-a100: card1, renderD128).
ONE_GPU = [
    oci_device("/dev/nvidiactl", 195, 255),
    oci_device("/dev/nvidia-uvm", 510, 0),
    oci_device("/dev/nvidia0", 195, 0),
    oci_device("/dev/dri/card1", 226, 1),
    oci_device("/dev/dri/renderD128", 226, 128),
]


def make_bundle(
    base: Path,
    root_path: str = "rootfs",
    devices: list[dict[str, object]] | None = ONE_GPU,
) -> Bundle:
    """A bundle under `base` whose rootfs has /usr/lib/x86_64-linux-gnu and /etc; config.json
    lists `devices` under linux.devices (None: no linux.devices at all)."""
    bundle = base / "bundle"
    rootfs = Path(root_path) if os.path.isabs(root_path) else bundle / root_path
    bundle.mkdir(parents=True, exist_ok=True)
    (rootfs / LIBDIR.lstrip("/")).mkdir(parents=True)
    (rootfs / "etc").mkdir()
    config: dict[str, object] = {"ociVersion": "1.0.2", "root": {"path": root_path}}
    if devices is not None:
        config["linux"] = {"devices": devices}
    (bundle / "config.json").write_text(json.dumps(config))
    return Bundle(bundle, rootfs)


def hook_argv(form: str = "fast") -> list[str]:
    """The three ways to start the hook: what specs use, `python -m`, the console script."""
    if form == "fast":
        return [sys.executable, "-I", "-S", HOOK_MAIN]
    if form == "module":
        return [sys.executable, "-m", "cdi.hook"]
    return [str(Path(sys.executable).parent / "gpu-cdi-hook")]


def run_hook(
    bundle: Bundle | None, *args: str, stdin: bytes | None = None, form: str = "fast"
) -> subprocess.CompletedProcess[str]:
    """Run the hook program as the runtime would: a new process, the state on stdin."""
    data = stdin if stdin is not None else (bundle.state if bundle else b"")
    proc = subprocess.run(
        [*hook_argv(form), *args],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
        env=ENV,
        cwd=PROJECT,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Non-zero exit, nothing on stdout, exactly one stderr line containing `needles`."""
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gpu-cdi-hook: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def snapshot(top: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under `top` (and `top` itself): type, mode, owner, mtime, content or target."""
    result: dict[str, tuple[object, ...]] = {}

    def record(path: str) -> None:
        st = os.lstat(path)
        rel = os.path.relpath(path, top)
        if stat.S_ISLNK(st.st_mode):
            extra: object = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            extra = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        else:
            extra = None
        result[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ino, extra)

    record(str(top))
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in dirnames + filenames:
            record(os.path.join(dirpath, name))
    return result


def make_host_sentinel(base: Path) -> Path:
    """A stand-in for host files an attacker would target: etc, lib, a library and a config."""
    host = base / "host"
    (host / "etc" / "ld.so.conf.d").mkdir(parents=True)
    (host / "etc" / "ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (host / "etc" / "ld.so.cache").write_bytes(b"host cache")
    (host / "etc" / "shadow").write_text("root:secret\n")
    (host / "lib").mkdir()
    (host / "lib" / "libcuda.so").write_bytes(b"host lib")
    (host / "dev" / "dri").mkdir(parents=True)
    return host
