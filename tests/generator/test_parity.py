"""End to end: `gpu-cdi generate` on fake hosts built from the shared layout, real pynvml
against the fake libnvidia-ml.so.1, equals nvidia-ctk 1.20.0's specs after normalization."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.generator import parity
from tests.generator.hosts import INVENTORIES, Hosts, gpu_cdi, unroot
from tests.generator.refs import REFERENCE, reference
from tests.require import need

CASES = [
    ("dgx-a100", "dgxa100.default.yaml", []),
    ("dgx-a100", "dgxa100.default.json", ["--format", "json"]),
    ("dgx-a100-mig", "dgxa100-mig.default.yaml", []),
    ("dgx-a100-mig", "dgxa100-mig.strategy-uuid.yaml", ["--device-name-strategy", "uuid"]),
]


def _compare(ours: dict[str, object], ref: str) -> None:
    need(REFERENCE.is_dir(), f"reference specs not found at {REFERENCE}")
    assert parity.differences(parity.normalize(ours), parity.normalize(reference(ref))) == []


@pytest.mark.parametrize(("topology", "ref", "flags"), CASES)
def test_generate_on_fake_host_equals_nvidia_ctk(
    hosts: Hosts, topology: str, ref: str, flags: list[str]
) -> None:
    host = hosts.get(topology)
    proc = gpu_cdi([*host.generate_argv[1:], *flags], host)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr
    ours = yaml.safe_load(proc.stdout)
    # Our fake host lives under a temp dir; nvidia-ctk's ran as `/`.
    _compare(unroot(ours, str(host.driver_root)), ref)


@pytest.mark.parametrize(("topology", "ref", "flags"), CASES)
def test_generate_from_shipped_inventory_equals_nvidia_ctk(
    topology: str, ref: str, flags: list[str]
) -> None:
    inventory = INVENTORIES / f"{topology}.yaml"
    need(inventory.is_file(), f"{inventory} not shipped yet")
    proc = gpu_cdi(["generate", "--inventory", str(inventory), *flags])
    assert proc.returncode == 0, proc.stderr
    _compare(yaml.safe_load(proc.stdout), ref)


def test_driver_container_layout(hosts: Hosts, tmp_path: Path) -> None:
    """Driver at /run/nvidia/driver: libnvidia-ml.so.1 is loaded from there, host paths keep
    the prefix, container paths drop it."""
    host = hosts.get("dgx-a100", "driver-container")
    proc = gpu_cdi([*host.generate_argv[1:]], host)
    assert proc.returncode == 0, proc.stderr
    spec = yaml.safe_load(proc.stdout)
    mounts = {m["containerPath"]: m["hostPath"] for m in spec["containerEdits"]["mounts"]}
    lib = "/usr/lib/x86_64-linux-gnu/libcuda.so.550.163.01"
    assert mounts[lib] == f"{host.driver_root}{lib}"
    _compare(unroot(unroot(spec, str(host.driver_root)), str(host.dev_root)), CASES[0][1])
