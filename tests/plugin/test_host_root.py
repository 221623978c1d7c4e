"""`gpu-cdi-nri --host-root`: in a container, the device nodes a resolved adjustment needs are
read under the node's / mounted there (issue 17)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cdi.errors import InjectionError
from cdi.inject import fill_device_node
from cdi.spec import ContainerEdits, DeviceNode
from nri_plugin.adjust import resolved_adjustment
from nri_plugin.cli import build_parser, load_config, main
from nri_plugin.config import ConfigError, from_text
from tests.require import need_root


def test_host_root_from_file_and_flag() -> None:
    assert from_text("host_root: /host\n", "f.yaml").host_root == "/host"
    assert load_config(build_parser().parse_args(["--host-root", "/node"])).host_root == "/node"
    assert load_config(build_parser().parse_args([])).host_root == "/"
    with pytest.raises(ConfigError, match=r'^f\.yaml: host_root: "host" is not an absolute path'):
        from_text("host_root: host\n", "f.yaml")


def test_missing_host_root_stops_the_plugin_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--host-root", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"gpu-cdi-nri: error: host root {tmp_path}/none (--host-root, or host_root in the "
        "config): no such directory (where the host's / "
        "should be mounted in this container, e.g. a hostPath volume of / at /host)"
    ]


def test_device_nodes_are_read_under_the_mount(tmp_path: Path) -> None:
    """The node's /dev is an absolute link to /devices, inside the mount: the node's, never
    this machine's (which has no /devices)."""
    need_root()
    mount = tmp_path / "node"
    (mount / "devices").mkdir(parents=True)
    os.mknod(mount / "devices/nvidia7", stat.S_IFCHR | 0o666, os.makedev(195, 7))
    os.symlink("/devices", mount / "dev")
    assert not os.path.lexists("/devices")
    node = fill_device_node(DeviceNode("/dev/nvidia7"), str(mount))
    assert (node.type, node.major, node.minor) == ("c", 195, 7)
    assert node.host_path == "/dev/nvidia7"  # the node's path, not where it was read
    adjust = resolved_adjustment(
        ContainerEdits(device_nodes=[DeviceNode("/dev/nvidia7")]), host_root=str(mount)
    )
    (device,) = adjust.linux.devices
    assert (device.path, device.type, device.major, device.minor) == ("/dev/nvidia7", "c", 195, 7)
    with pytest.raises(InjectionError) as error:
        fill_device_node(DeviceNode("/dev/nvidia8"), str(mount))
    assert str(error.value) == (
        'failed to inject devices: failed to stat CDI host device "/dev/nvidia8" '
        f"(at {mount}/devices/nvidia8): No such file or directory"
    )
