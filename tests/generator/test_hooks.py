"""Our hooks run with the real gpu-cdi-hook and do what nvidia-ctk's hooks do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cdi.dump import to_data
from cdi.hook.args import parse
from cdi.nvidia import build as b
from cdi.nvidia import inventory
from tests.generator.hosts import INVENTORIES
from tests.generator.refs import REFERENCE, reference
from tests.require import need


def _inv(name: str) -> inventory.Inventory:
    path = INVENTORIES / f"{name}.yaml"
    need(path.is_file(), f"{path} not shipped yet")
    return inventory.load(str(path))


def _all_hooks(data: dict[str, Any]) -> list[dict[str, Any]]:
    hooks = list(data.get("containerEdits", {}).get("hooks", []))
    for device in data["devices"]:
        hooks += device["containerEdits"].get("hooks", [])
    return hooks


@pytest.mark.parametrize(
    "options",
    [
        b.Options(),
        b.Options(hook_per_action=True, ldconfig_path="/sbin/ldconfig.real"),
        b.Options(hooks=b.DEFAULT_HOOKS | {"chmod"}),
        b.Options(mode="management", hooks=b.DEFAULT_HOOKS | {"chmod"}),
    ],
)
def test_gpu_cdi_hook_accepts_every_hook(options: b.Options) -> None:
    data = to_data(b.build(_inv("dgx-a100-mig"), options).spec)
    hooks = _all_hooks(data)
    assert hooks
    for hook in hooks:
        assert hook["hookName"] == "createContainer"
        assert hook["args"][0] == os.path.basename(hook["path"])
        assert parse(hook["args"][1:])  # raises UsageError on anything it would refuse


def _links_made(
    tmp_path: Path, hooks: list[dict[str, Any]], nodes: list[str], name: str
) -> dict[str, str]:
    """Run the create-symlinks actions of `hooks` in a fresh rootfs of a container given the
    device `nodes`; every symlink made."""
    rootfs = tmp_path / name / "rootfs"
    rootfs.mkdir(parents=True)
    bundle = rootfs.parent
    devices = [{"path": p, "type": "c", "major": 195, "minor": 0} for p in nodes]
    config = {"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "linux": {"devices": devices}}
    (bundle / "config.json").write_text(json.dumps(config))
    state = json.dumps(
        {"ociVersion": "1.0.2", "id": name, "status": "creating", "bundle": str(bundle)}
    )
    for hook in hooks:
        args = hook["args"][1:]
        if args[:1] == ["hook"]:
            args = args[1:]
        if args[0] != "create-symlinks":
            continue
        proc = subprocess.run(
            [sys.executable, "-m", "cdi.hook", *args], input=state, text=True, capture_output=True
        )
        assert proc.returncode == 0, proc.stderr
    return {
        "/" + str(p.relative_to(rootfs)): os.readlink(p)
        for p in rootfs.rglob("*")
        if p.is_symlink()
    }


def test_links_equal_nvidia_ctk_links(tmp_path: Path) -> None:
    """The links our spec makes for `all` are the links nvidia-ctk's spec makes."""
    need(REFERENCE.is_dir(), f"reference specs not found at {REFERENCE}")
    ours = to_data(b.build(_inv("dgx-a100"), b.Options()).spec)
    theirs = reference("dgxa100.default.yaml")

    def made(spec: dict[str, Any], name: str) -> dict[str, str]:
        (device,) = [d for d in spec["devices"] if d["name"] == "all"]
        edits = [spec["containerEdits"], device["containerEdits"]]
        hooks = [h for e in edits for h in e.get("hooks", [])]
        nodes = [n["path"] for e in edits for n in e.get("deviceNodes", [])]
        return _links_made(tmp_path, hooks, nodes, name)

    links = made(ours, "ours")
    assert links == made(theirs, "theirs")
    assert links["/usr/lib/x86_64-linux-gnu/libcuda.so.1"] == "libcuda.so.550.163.01"
    assert links["/dev/dri/by-path/pci-0000:bd:00.0-render"] == "../renderD135"
