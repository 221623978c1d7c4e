"""End to end on a fake host: the kubelet stand-in allocates from the plugin, then creates a
container through CRI on a real containerd with what Allocate returned, as kubelet's runtime
manager does (envs, mounts, devices, annotations, CDI devices), and the container sees exactly
the device nodes of the allocated GPUs.

The spec containerd (cdi-cri) or gpu-cdi-nri (annotations, env) resolves the names in is the
one the plugin itself wrote with --cdi-spec-file.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.device_plugin.kubelet import FakeKubelet
from tests.device_plugin.support import Plugin
from tests.require import need_root

pytestmark = pytest.mark.e2e

HOOK = str(Path(sys.executable).parent / "gpu-cdi-hook")
SHOW = "find /dev -type c -name 'nvidia*'; echo NVD=$NVIDIA_VISIBLE_DEVICES"
CONTROL = {"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Fake hosts by topology, built once (device nodes made with mknod)."""
    need_root()
    from gpu_cdi_fakehost.builder import build_host

    return {
        name: build_host(name, tmp_path_factory.mktemp(name))
        for name in ("dgx-a100", "dgx-a100-mig")
    }


@contextlib.contextmanager
def serving(host: Any, ctd: Any, work: Path, *args: str) -> Iterator[tuple[FakeKubelet, Plugin]]:
    """The plugin for `host`, writing its spec into containerd's CDI dir, registered with a
    kubelet stand-in."""
    argv = [*host.generate_argv[2:], "--nvidia-cdi-hook-path", HOOK]
    argv += ["--cdi-spec-file", str(ctd.cdi_dir / "nvidia.yaml"), *args]
    with FakeKubelet(work / "device-plugins") as kubelet:
        argv += ["--kubelet-socket", str(kubelet.socket)]
        with Plugin(argv, work / "plugin.log", env=host.env) as plugin:
            kubelet.wait_for(lambda: kubelet.registrations, what="registration")
            yield kubelet, plugin


def run_allocated(cri: Any, response: Any, name: str) -> Any:
    """A container made from a ContainerAllocateResponse, as kubelet makes it."""
    pod = cri.run_pod(f"{name}-pod")
    result = cri.run(
        pod,
        name,
        ["sh", "-c", SHOW],
        env=dict(response.envs),
        annotations=dict(response.annotations),
        cdi_devices=[d.name for d in response.cdi_devices],
        devices=[(d.host_path, d.container_path, d.permissions) for d in response.devices],
        mounts=[(m.host_path, m.container_path, m.read_only) for m in response.mounts],
    )
    assert result.exit_code == 0, result.logs
    return result


def nodes_seen(logs: str) -> set[str]:
    return {word for word in logs.split() if word.startswith("/dev/")}


def gpu_nodes(host: Any, uuids: list[str]) -> set[str]:
    minors = {
        g.uuid: g.minor if g.minor is not None else i for i, g in enumerate(host.topology.gpus)
    }
    return {f"/dev/nvidia{minors[u]}" for u in uuids}


def test_cdi_cri_devices_reach_the_container(
    hosts: dict[str, Any], containerd_factory: Callable[..., Any], tmp_path: Path
) -> None:
    host = hosts["dgx-a100"]
    ctd = containerd_factory()
    with serving(host, ctd, tmp_path, "--device-list-strategy", "cdi-cri") as (kubelet, plugin):
        kubelet.wait_for(lambda: len(kubelet.healthy("nvidia.com/gpu")) == 8, what="8 GPUs")
        ids, response = kubelet.allocate("nvidia.com/gpu", 2)
        assert [d.name for d in response.cdi_devices] == [f"nvidia.com/gpu={i}" for i in ids]
        assert not response.envs and not response.annotations
        with ctd.cri() as cri:
            result = run_allocated(cri, response, "cdi-cri")
    assert nodes_seen(result.logs) == CONTROL | gpu_nodes(host, ids)
    assert "Allocate refused" not in plugin.log()


def test_mig_device_by_cdi_cri(
    hosts: dict[str, Any], containerd_factory: Callable[..., Any], tmp_path: Path
) -> None:
    host = hosts["dgx-a100-mig"]
    ctd = containerd_factory()
    args = ("--device-list-strategy", "cdi-cri", "--mig-strategy", "mixed")
    with serving(host, ctd, tmp_path, *args) as (kubelet, _):
        kubelet.wait_for(lambda: kubelet.healthy("nvidia.com/mig-1c.3g.20gb"), what="MIG devices")
        ids, response = kubelet.allocate("nvidia.com/mig-1c.3g.20gb", 1)
        with ctd.cri() as cri:
            result = run_allocated(cri, response, "mig")
    # GPU 1 (minor 1), GI 2 CI 0: caps 3 + 135 * 1 + 9 * 2 = 156 and 157
    assert nodes_seen(result.logs) == CONTROL | {
        "/dev/nvidia1",
        "/dev/nvidia-caps/nvidia-cap156",
        "/dev/nvidia-caps/nvidia-cap157",
    }, ids


@pytest.mark.parametrize("strategy", ["cdi-annotations", "envvar"])
def test_annotations_and_env_through_gpu_cdi_nri(
    strategy: str,
    hosts: dict[str, Any],
    containerd_factory: Callable[..., Any],
    tmp_path: Path,
) -> None:
    from tests.plugin.e2e_support import attached

    host = hosts["dgx-a100"]
    ctd = containerd_factory(enable_cdi=False)  # only gpu-cdi-nri resolves names
    with serving(host, ctd, tmp_path, "--device-list-strategy", strategy) as (kubelet, _):
        kubelet.wait_for(lambda: len(kubelet.healthy("nvidia.com/gpu")) == 8, what="8 GPUs")
        ids, response = kubelet.allocate("nvidia.com/gpu", 3)
        if strategy == "envvar":
            assert dict(response.envs) == {"NVIDIA_VISIBLE_DEVICES": ",".join(ids)}
        else:
            assert list(response.annotations.values()) == [
                ",".join(f"nvidia.com/gpu={i}" for i in ids)
            ]
        with attached(ctd, [ctd.cdi_dir], tmp_path / "nri.log"), ctd.cri() as cri:
            result = run_allocated(cri, response, strategy)
    assert nodes_seen(result.logs) == CONTROL | gpu_nodes(host, ids)
    assert "NVD=void" in result.logs  # gpu-cdi-nri took it over
