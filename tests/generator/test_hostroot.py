"""The node's / mounted elsewhere (`--host-root`, issue 17): read under the mount, write the
node's own paths; symlinks and `..` never leave the mount; bad mounts are one line.

The container run itself (the DaemonSet's command in podman) is tests/deploy/test_in_container.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdi.nvidia import rootpath
from cdi.nvidia.discover import DiscoveryError, nvml_library
from cdi.nvidia.roots import RootError, Roots
from tests.generator.hosts import Hosts, gpu_cdi, host_args, unroot
from tests.generator.test_parity import CASES, _compare
from tests.require import need_root

DRIVER_CONTAINER = ["--driver-root", "/run/nvidia/driver", "--dev-root", "/"]
LIB = "/usr/lib/x86_64-linux-gnu/libcuda.so.550.163.01"


def _here_and_mounted(command: str, host: Any) -> tuple[Any, Any]:
    """`command`'s output for the fake host as this machine's driver, and read as a node whose
    / is mounted at the host's root; both parsed."""
    extra = DRIVER_CONTAINER if host.layout == "driver-container" else []
    here = gpu_cdi([command, *host_args(host)], host)
    mounted = gpu_cdi([command, "--host-root", str(host.root), *extra], host)
    assert here.returncode == 0 and mounted.returncode == 0, here.stderr + mounted.stderr
    assert str(host.root) not in mounted.stdout
    return yaml.safe_load(here.stdout), yaml.safe_load(mounted.stdout)


def _error_line(command: str, stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"gpu-cdi {command}: error: "), stderr
    return lines[0]


@pytest.mark.parametrize("layout", ["host", "driver-container"])
def test_mounted_node_gives_the_spec_of_the_node_itself(hosts: Hosts, layout: str) -> None:
    here, spec = _here_and_mounted("generate", hosts.get("dgx-a100-mig", layout))
    # The fake host's own run writes this machine's paths (<root>/usr/lib/...); with the root
    # stripped, it is what the node writes about itself.
    assert spec == unroot(here, str(hosts.get("dgx-a100-mig", layout).root))
    mounts = {m["containerPath"]: m["hostPath"] for m in spec["containerEdits"]["mounts"]}
    prefix = "/run/nvidia/driver" if layout == "driver-container" else ""
    assert mounts[LIB] == prefix + LIB


def test_nvml_is_the_mounted_nodes(hosts: Hosts) -> None:
    host = hosts.get("dgx-a100", "driver-container")
    roots = Roots("/run/nvidia/driver", "/", host_root=str(host.root))
    assert nvml_library(roots) == str(host.nvml_library)  # the real file under the mount
    with pytest.raises(DiscoveryError, match=r"^libnvidia-ml\.so\.1 was not found under the "):
        nvml_library(Roots(host_root=str(host.root)))


def test_mounted_node_equals_nvidia_ctk_run_on_the_node(hosts: Hosts) -> None:
    # nvidia-ctk's reference ran with the fake host as `/`: no path rewriting is needed.
    topology, ref, flags = CASES[2]
    host = hosts.get(topology)
    proc = gpu_cdi(["generate", "--host-root", str(host.root), *flags], host)
    assert proc.returncode == 0, proc.stderr
    _compare(yaml.safe_load(proc.stdout), ref)


@pytest.mark.parametrize("layout", ["host", "driver-container"])
def test_inventory_of_a_mounted_node(hosts: Hosts, layout: str) -> None:
    expected, mounted = _here_and_mounted("inventory", hosts.get("dgx-a100-mig", layout))
    expected["driverRoot"] = "/run/nvidia/driver" if layout == "driver-container" else "/"
    expected["devRoot"] = "/"
    assert mounted == expected


def test_absolute_links_in_the_node_mean_the_nodes_paths(tmp_path: Path) -> None:
    """A node whose /dev, /proc, /sys, driver root and ld.so.cache are absolute symlinks: they
    resolve inside the mount, and the spec is the plain node's. Followed by the kernel
    instead, they would name this machine's /moved-*, which do not exist."""
    need_root()
    from gpu_cdi_fakehost.builder import build_host

    plain = build_host("dgx-a100-mig", tmp_path / "plain", layout_name="driver-container")
    node = build_host("dgx-a100-mig", tmp_path / "node", layout_name="driver-container")
    cache = node.driver_root / "etc/ld.so.cache"
    moves = [(cache, node.driver_root, "/etc/moved-ld.so.cache")]
    moves += [(node.root / n, node.root, f"/moved-{n}") for n in ("dev", "proc", "sys")]
    moves += [(node.driver_root, node.root, "/moved-driver")]
    for path, root, target in moves:
        assert not os.path.lexists(target)  # nothing this machine has
        os.rename(path, rootpath.host(str(root), target))
        os.symlink(target, path)
    assert not cache.exists()  # broken when followed from here
    want = gpu_cdi(["generate", "--host-root", str(plain.root), *DRIVER_CONTAINER], plain)
    got = gpu_cdi(["generate", "--host-root", str(node.root), *DRIVER_CONTAINER], node)
    assert want.returncode == 0 and got.returncode == 0, want.stderr + got.stderr
    assert got.stdout == want.stdout
    assert "/dev/nvidia-caps/" in got.stdout and "/dev/dri/" in got.stdout


def test_dotdot_and_links_never_leave_the_mount(tmp_path: Path) -> None:
    mount = tmp_path / "node"
    (mount / "proc-fake/driver").mkdir(parents=True)
    (mount / "proc-fake/driver/minors").write_text("gpu0/gi1/access 21\n")
    (mount / "etc").mkdir()
    (mount / "real-dev").mkdir()
    (mount / "real-dev/nvidia0").write_text("")
    os.symlink("/../../../../../../proc-fake", mount / "proc")
    os.symlink("/etc/passwd", mount / "etc/ld.so.cache")  # the node's, which it lacks
    os.symlink("../../../../../../../../real-dev", mount / "dev")
    root = str(mount)
    assert rootpath.read_text(root, "/proc/driver/minors") == "gpu0/gi1/access 21\n"
    assert rootpath.local(root, "/etc/ld.so.cache") is None  # never this machine's file
    assert rootpath.read_text(root, "/etc/ld.so.cache") is None
    assert rootpath.listdir(root, "/dev") == ["nvidia0"]
    assert rootpath.entry(root, "/dev/nvidia0") == f"{root}/real-dev/nvidia0"
    assert rootpath.entry(root, "/../../dev/../dev/nvidia0") == f"{root}/real-dev/nvidia0"
    roots = Roots(driver_root="/../../../..", host_root=root)
    assert roots.locate().driver == root
    assert roots.dev_root == "/../../../.."


def test_roots_defaults_and_errors(tmp_path: Path) -> None:
    assert Roots() == Roots("/", "/", "/", "/", ())
    assert Roots(driver_root="/run/nvidia/driver").dev_root == "/run/nvidia/driver"
    assert not Roots().mounted and Roots(host_root="/host").mounted
    (tmp_path / "file").write_text("")
    with pytest.raises(RootError, match=r"^--host-root /nonexistent-gpu-cdi: no such directory"):
        Roots(host_root="/nonexistent-gpu-cdi").locate()
    with pytest.raises(RootError, match=r"--host-root \S+/file: not a directory"):
        Roots(host_root=str(tmp_path / "file")).locate()
    with pytest.raises(RootError) as error:
        Roots(host_root=str(tmp_path), dev_root="/file").locate()
    assert str(error.value) == (
        f"--dev-root /file: not a directory on the node mounted at {tmp_path} "
        f"(looked at {tmp_path}/file)"
    )


@pytest.mark.parametrize("command", ["generate", "inventory"])
def test_bad_mounts_are_one_line(tmp_path: Path, hosts: Hosts, command: str) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "empty").mkdir()
    cases = [
        (["--host-root", str(tmp_path / "none")], f"--host-root {tmp_path}/none: no such dir"),
        (["--host-root", str(tmp_path / "file")], f"--host-root {tmp_path}/file: not a dir"),
        (["--host-root", "host"], "--host-root 'host': must be an absolute path"),
        (
            ["--host-root", str(tmp_path / "empty")],
            f"libnvidia-ml.so.1 was not found under the driver root / of the node mounted at "
            f"{tmp_path}/empty (searched no library directory found and "
            f"{tmp_path}/empty/etc/ld.so.cache); is the node's / mounted at {tmp_path}/empty",
        ),
        (["--proc-sys-root", str(tmp_path / "none")], f"--proc-sys-root {tmp_path}/none: no "),
    ]
    for flags, says in cases:
        proc = gpu_cdi([command, *flags])
        assert proc.returncode == 2, proc.stderr
        assert says in _error_line(command, proc.stderr), (flags, proc.stderr)
        assert proc.stdout == ""
    host = hosts.get("dgx-a100")
    proc = gpu_cdi([command, "--host-root", str(host.root), *DRIVER_CONTAINER], host)
    assert _error_line(command, proc.stderr).endswith(
        f"--driver-root /run/nvidia/driver: no such directory on the node mounted at "
        f"{host.root} (looked at {host.root}/run/nvidia/driver)"
    )


def test_saved_inventory_is_not_read_through_a_mount(tmp_path: Path) -> None:
    inventory = Path(__file__).resolve().parents[2] / "specs/inventories/dgx-a100.yaml"
    for flag in ("--host-root", "--proc-sys-root"):
        proc = gpu_cdi(["generate", "--inventory", str(inventory), flag, "/"])
        assert "--inventory conflicts with --host-root, --proc-sys-root" in _error_line(
            "generate", proc.stderr
        )
