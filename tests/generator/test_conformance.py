"""The reference CDI library (Go 0.8.0, what containerd 1.7 and podman 5 run) accepts our specs
and agrees on their minimum version; device injection works through it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.generator.hosts import INVENTORIES, Hosts, gpu_cdi
from tests.require import need

CASES = [
    ("dgx-a100", []),
    ("dgx-a100", ["--format", "json"]),
    ("dgx-a100", ["--cdi-version", "0.5.0"]),
    ("dgx-a100", ["--device-name-strategy", "type-index", "--one-hook-per-action"]),
    ("dgx-a100", ["--mode", "management", "--vendor", "management.nvidia.com"]),
    ("dgx-a100", ["--mode", "imex", "--class", "imex-channel"]),
    ("dgx-a100", ["--device-id", "none"]),
    ("dgx-a100-mig", []),
    ("dgx-h100", []),
    ("workstation", []),
    ("scale-64", []),
]


@pytest.mark.parametrize(("topology", "flags"), CASES)
def test_reference_library_accepts_generated_spec(
    reference: object, tmp_path: Path, topology: str, flags: list[str]
) -> None:
    inventory = INVENTORIES / f"{topology}.yaml"
    need(inventory.is_file(), f"{inventory} not shipped yet")
    ext = "json" if "json" in flags else "yaml"
    out = tmp_path / f"nvidia.{ext}"
    proc = gpu_cdi(["generate", "--inventory", str(inventory), "--output", str(out), *flags])
    assert proc.returncode == 0, proc.stderr
    verdict = reference.validate([out])[str(out)]  # type: ignore[attr-defined]
    assert verdict.ok, verdict.error
    declared = yaml.safe_load(out.read_text())["cdiVersion"]
    assert reference.min_version(out) == declared  # type: ignore[attr-defined]


def test_reference_injects_a_gpu(reference: object, hosts: Hosts, tmp_path: Path) -> None:
    """The shipped inventory re-rooted onto a fake host (its nodes must exist: the library
    stats them)."""
    inventory = INVENTORIES / "dgx-a100.yaml"
    need(inventory.is_file(), f"{inventory} not shipped yet")
    host = hosts.get("dgx-a100")
    spec_dir = tmp_path / "cdi"
    spec_dir.mkdir()
    out = str(spec_dir / "nvidia.yaml")
    root = ["--driver-root", str(host.driver_root)]
    proc = gpu_cdi(["generate", "--inventory", str(inventory), "--output", out, *root])
    assert proc.returncode == 0, proc.stderr
    oci = {"ociVersion": "1.0.2", "process": {"env": []}, "linux": {}}
    result = reference.inject([spec_dir], oci, ["nvidia.com/gpu=1"])  # type: ignore[attr-defined]
    devices = [d["path"] for d in result["linux"]["devices"]]
    assert "/dev/nvidia1" in devices and "/dev/nvidiactl" in devices
    assert "/dev/nvidia0" not in devices
    assert {44, 105} <= set(result["process"]["user"]["additionalGids"])
