"""The official kubelet device-plugin api.proto: where install.sh put it (KUBELET_PROTO), else
fetched once from Debian sid with a private apt configuration into .cache/kubelet-api/."""

from __future__ import annotations

from pathlib import Path

from device_plugin.api import genproto
from tests.e2e import paths

PACKAGE = "golang-github-kubernetes-kubelet-dev"


def official_proto() -> Path:
    """The official v1beta1 api.proto; DebianFetchError when apt cannot get it."""
    found = genproto.official_proto()
    if found is not None:
        return found
    from tests.nri.debian_protos import newest_file

    _, path = newest_file(
        PACKAGE, f"usr/share/gocode/src/{genproto.IN_PACKAGE}", paths.CACHE / "kubelet-api"
    )
    return path
