"""Where tests/e2e/install.sh put containerd, the .proto files and Go; what is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
CACHE = Path(os.environ.get("GPU_CDI_CACHE", str(REPO / ".cache")))


def busybox_path() -> Path | None:
    """The static busybox (busybox-static package) used to build the offline image."""
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.isfile(cand):
            return Path(cand)
    return None


def missing() -> list[str]:
    """Human-readable list of what the containerd harness needs but cannot find."""
    out = []
    for name in ("containerd", "containerd-shim-runc-v2", "ctr"):
        if not os.access(CONTAINERD_BIN / name, os.X_OK):
            out.append(f"{CONTAINERD_BIN / name} (trixie containerd)")
    if not CRI_PROTO.is_file():
        out.append(f"{CRI_PROTO} (golang-github-kubernetes-cri-api-dev)")
    if shutil.which("runc") is None:
        out.append("runc on PATH")
    if busybox_path() is None:
        out.append("/bin/busybox (busybox-static)")
    return out


def missing_message() -> str | None:
    """None when everything is there, else one line naming what is missing and how to fix it."""
    miss = missing()
    if not miss:
        return None
    return f"containerd harness: missing {', '.join(miss)}; {INSTALL_HINT}"
