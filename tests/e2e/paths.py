"""Where tests/e2e/install.sh put containerd, podman 5, Docker, the .proto files; what is missing.

The same paths are in $GPU_CDI_E2E_PREFIX/env (shell-sourceable), written by install.sh.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import attrs

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = "run `bash tests/e2e/install.sh` as root"
PREFIX = Path(os.environ.get("GPU_CDI_E2E_PREFIX", "/opt/gpu-cdi-e2e"))
CONTAINERD_PREFIX = PREFIX / "containerd"
CONTAINERD_BIN = CONTAINERD_PREFIX / "usr" / "bin"
GOCODE = CONTAINERD_PREFIX / "usr" / "share" / "gocode" / "src"
CRI_PROTO = GOCODE / "k8s.io" / "cri-api" / "pkg" / "apis" / "runtime" / "v1" / "api.proto"
NRI_PROTO = GOCODE / "github.com" / "containerd" / "nri" / "pkg" / "api" / "api.proto"
# trixie podman 5.4, patched to run on bookworm with trixie's glibc (bookworm's 4.3: /usr/bin)
PODMAN5 = PREFIX / "podman5" / "usr" / "bin" / "podman"
# netavark, aardvark-dns: podman 5's helper_binaries_dir (containers.conf [engine])
PODMAN5_HELPERS = PREFIX / "podman5" / "usr" / "lib" / "podman"
# sid's containerd 2.1 (config version 3), beside trixie's 1.7.24
CONTAINERD2_BIN = PREFIX / "containerd2" / "usr" / "bin"
# sid's Docker 28 (dockerd runs containerd 2.1 from CONTAINERD2_BIN)
DOCKER_PREFIX = PREFIX / "docker"
DOCKERD = DOCKER_PREFIX / "usr" / "sbin" / "dockerd"
DOCKER = DOCKER_PREFIX / "usr" / "bin" / "docker"
# kubelet's device-plugin API (sid's golang-github-kubernetes-kubelet-dev)
KUBELET_GOCODE = PREFIX / "kubelet" / "usr" / "share" / "gocode" / "src"
KUBELET_PROTO = KUBELET_GOCODE / "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto"
CACHE = Path(os.environ.get("GPU_CDI_CACHE", str(REPO / ".cache")))


def busybox_path() -> Path | None:
    """The static busybox (busybox-static package) used to build the offline image."""
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.isfile(cand):
            return Path(cand)
    return None


@attrs.frozen
class ContainerdRelease:
    """One containerd the harness can run: where install.sh put it and its config format."""

    version: str
    bin: Path
    config_version: int
    package: str  # for messages


CONTAINERD_RELEASES = {
    r.version: r
    for r in (
        ContainerdRelease("1.7", CONTAINERD_BIN, 2, "trixie containerd 1.7.24"),
        ContainerdRelease("2.1", CONTAINERD2_BIN, 3, "sid containerd 2.1"),
    )
}
CONTAINERD_VERSIONS = tuple(CONTAINERD_RELEASES)


def release_of(releases: Mapping[str, T], program: str, version: str) -> T:
    """`releases[version]`; ValueError naming the known versions of `program` otherwise."""
    try:
        return releases[version]
    except KeyError:
        known = ", ".join(releases)
        raise ValueError(f"unknown {program} version {version!r} (known: {known})") from None


def containerd_release(version: str) -> ContainerdRelease:
    """The release for a version string of CONTAINERD_VERSIONS."""
    return release_of(CONTAINERD_RELEASES, "containerd", version)


def missing(version: str = "1.7") -> list[str]:
    """Human-readable list of what the containerd harness needs but cannot find."""
    release = containerd_release(version)
    out = []
    for name in ("containerd", "containerd-shim-runc-v2", "ctr"):
        if not os.access(release.bin / name, os.X_OK):
            out.append(f"{release.bin / name} ({release.package})")
    if not CRI_PROTO.is_file():
        out.append(f"{CRI_PROTO} (golang-github-kubernetes-cri-api-dev)")
    if shutil.which("runc") is None:
        out.append("runc on PATH")
    if busybox_path() is None:
        out.append("/bin/busybox (busybox-static)")
    return out


def missing_message(version: str = "1.7") -> str | None:
    """None when everything is there, else one line naming what is missing and how to fix it."""
    miss = missing(version)
    if not miss:
        return None
    return f"containerd harness: missing {', '.join(miss)}; {INSTALL_HINT}"
