"""Specs for the CDI consumer tests (podman, Docker): the dgx-a100 fake host's spec at
cdiVersion 0.5.0 and at the default version, and what a container given GPU 0 must show."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.generator.hosts import INVENTORIES, Hosts, gpu_cdi
from tests.require import need

SHOW = "ls /dev; ls -l /dev/dri/by-path /usr/lib/x86_64-linux-gnu/libcuda.so; id"


@pytest.fixture(scope="module")
def consumer_specs(hosts: Hosts, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The dgx-a100 spec at cdiVersion 0.5.0 and at the default version, hook beside python."""
    host = hosts.get("dgx-a100")
    hook = Path(sys.executable).parent / "gpu-cdi-hook"  # the console script of this venv
    need(hook.is_file(), f"gpu-cdi-hook not installed in {hook.parent}")
    common = ["generate", "--inventory", str(INVENTORIES / "dgx-a100.yaml")]
    common += ["--driver-root", str(host.driver_root), "--hook-path", str(hook)]
    out = {}
    for label, extra in (("0.5.0", ["--cdi-version", "0.5.0"]), ("default", [])):
        path = tmp_path_factory.mktemp(f"spec-{label}") / "nvidia.yaml"
        proc = gpu_cdi([*common, *extra, "--output", str(path)])
        assert proc.returncode == 0, proc.stderr
        out[label] = path
    return out


def assert_gpu_0(stdout: str) -> None:
    words = stdout.split()
    assert "nvidia0" in words and "nvidiactl" in words and "nvidia1" not in words
    # The chained gpu-cdi-hook ran: DRM by-path links and driver library links exist.
    assert "pci-0000:07:00.0-card -> ../card1" in stdout
    assert "libcuda.so -> libcuda.so.1" in stdout
