"""Offline OCI images for the e2e tests: one layer holding the host's static busybox.

`build_image_tar` writes an OCI image layout tarball (oci-layout, index.json, blobs/) that
`ctr images import` accepts, so no registry is ever contacted. Extra files, directories and
symbolic links can be added to the rootfs, e.g. for hostile images whose library directory is
a link pointing out of the container root.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.e2e import paths

DEFAULT_REF = "localhost/gpu-cdi-e2e/busybox:latest"
BASE_DIRS = ("bin", "dev", "etc", "proc", "sys", "tmp", "var", "run", "root", "usr", "usr/lib")

# value of extra_files: content (str is UTF-8 encoded; mode 0644) or (content, mode)
FileContent = bytes | str | tuple[bytes | str, int]


def _arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    return sorted({a for a in out.stdout.split() if a and "/" not in a and a != "busybox"})


class _Layer:
    """Deterministic tar writer that adds missing parent directories itself."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.TarFile(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.seen: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = 0
        info.uid = info.gid = 0
        return info

    def _parents(self, name: str) -> None:
        parent = posixpath.dirname(name)
        if parent and parent not in self.seen:
            self.dir(parent)

    def dir(self, name: str, mode: int = 0o755) -> None:
        name = name.strip("/")
        if name in self.seen:
            return
        self._parents(name)
        self.seen.add(name)
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode))

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        self._parents(name)
        self.seen.add(name)
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        self._parents(name)
        self.seen.add(name)
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)

    def close(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def build_layer(
    *,
    busybox: Path | None = None,
    extra_files: Mapping[str, FileContent] | None = None,
    symlinks: Mapping[str, str] | None = None,
    dirs: Sequence[str] = (),
) -> bytes:
    """Return the uncompressed layer tar: busybox with all its applets in /bin, plus extras."""
    bb = busybox or paths.busybox_path()
    if bb is None:
        raise FileNotFoundError(f"no static busybox at /bin/busybox; {paths.INSTALL_HINT}")
    layer = _Layer()
    for d in BASE_DIRS:
        layer.dir(d, 0o1777 if d == "tmp" else 0o755)
    layer.file("bin/busybox", bb.read_bytes(), 0o755)
    for applet in _applets(bb):
        layer.symlink(f"bin/{applet}", "busybox")
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    layer.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    for d in dirs:
        layer.dir(d)
    for name, content in (extra_files or {}).items():
        mode = 0o644
        if isinstance(content, tuple):
            content, mode = content
        data = content.encode() if isinstance(content, str) else content
        layer.file(name, data, mode)
    for name, target in (symlinks or {}).items():
        layer.symlink(name, target)
    return layer.close()


def _add_blob(out: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest.split(":", 1)[1])
    info.size = len(data)
    info.mode = 0o644
    out.addfile(info, io.BytesIO(data))
    return digest, len(data)


def build_image_tar(
    output: Path,
    ref: str = DEFAULT_REF,
    *,
    busybox: Path | None = None,
    extra_files: Mapping[str, FileContent] | None = None,
    symlinks: Mapping[str, str] | None = None,
    dirs: Sequence[str] = (),
    cmd: Sequence[str] = ("/bin/sleep", "2147483647"),
    env: Sequence[str] = ("PATH=/usr/local/bin:/usr/bin:/bin",),
) -> Path:
    """Write an importable OCI image tarball for `ref` to `output` and return `output`.

    `extra_files` maps rootfs paths to content (or (content, mode)); `symlinks` maps rootfs
    paths to link targets (taken verbatim, so absolute or `..` targets are possible). The
    default command sleeps, so the image doubles as the CRI sandbox ("pause") image.
    """
    layer = build_layer(busybox=busybox, extra_files=extra_files, symlinks=symlinks, dirs=dirs)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": _arch(),
        "os": "linux",
        "config": {"Env": list(env), "Cmd": list(cmd), "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as out:
        # uncompressed layer: import is faster and nothing is transferred anyway
        layer_digest, layer_size = _add_blob(out, layer)
        cfg_digest, cfg_size = _add_blob(out, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": cfg_digest,
                "size": cfg_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        }
        man_digest, man_size = _add_blob(out, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": man_digest,
                    "size": man_size,
                    "platform": {"architecture": _arch(), "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
                    },
                }
            ],
        }
        for name, obj in (("oci-layout", {"imageLayoutVersion": "1.0.0"}), ("index.json", index)):
            data = json.dumps(obj, sort_keys=True).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            out.addfile(info, io.BytesIO(data))
    tmp.replace(output)
    return output
