"""The plugin process driven by the kubelet stand-in as kubelet's device manager drives it:
registration, ListAndWatch, GetPreferredAllocation, Allocate, kubelet restarts and refusals.
Devices come from saved inventories (no NVML: health checks off)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from device_plugin.api import HEALTHY, VERSION
from device_plugin.server import file_identity
from tests.device_plugin.kubelet import FakeKubelet, plugin_sockets
from tests.device_plugin.support import INVENTORIES, Plugin

MIG = str(INVENTORIES / "dgx-a100-mig.yaml")
DGX = str(INVENTORIES / "dgx-a100.yaml")
DGX_UUIDS = [
    line.split()[-1]
    for line in Path(DGX).read_text().splitlines()
    if line.strip().startswith("uuid: GPU-")
]


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[FakeKubelet]:
    with FakeKubelet(tmp_path / "device-plugins") as stand_in:
        yield stand_in


def start(kubelet: FakeKubelet, tmp_path: Path, *args: str) -> Plugin:
    return Plugin(
        ["--kubelet-socket", str(kubelet.socket), "--log-level", "debug", *args],
        tmp_path / "plugin.log",
    )


def test_registers_every_resource_and_lists_its_devices(
    kubelet: FakeKubelet, tmp_path: Path
) -> None:
    with start(kubelet, tmp_path, "--inventory", MIG, "--mig-strategy", "mixed") as plugin:
        resources = {
            "nvidia.com/gpu": 6,
            "nvidia.com/mig-3g.20gb": 2,
            "nvidia.com/mig-2g.10gb": 1,
            "nvidia.com/mig-1g.5gb": 2,
            "nvidia.com/mig-1c.3g.20gb": 1,
            "nvidia.com/mig-2c.3g.20gb": 1,
        }
        kubelet.wait_for(
            lambda: all(len(kubelet.devices(r)) == n for r, n in resources.items()),
            what="every resource listed",
        )
        assert sorted(r.resource for r in kubelet.registrations) == sorted(resources)
        for registration in kubelet.registrations:
            assert registration.options.get_preferred_allocation_available
            assert not registration.options.pre_start_required
        assert plugin_sockets(kubelet.dir) == sorted(
            f"gpu-cdi-{r.partition('/')[2]}.sock" for r in resources
        )
        gpus = kubelet.devices("nvidia.com/gpu")
        assert {d.health for d in gpus} == {HEALTHY}
        assert all(d.ID.startswith("GPU-") for d in gpus)
        assert all(d.ID.startswith("MIG-") for d in kubelet.devices("nvidia.com/mig-1g.5gb"))
        plugin.wait_log("registered ", count=len(resources))
        assert plugin.stop() == 0
        # its sockets are gone, kubelet's is not
        assert plugin_sockets(kubelet.dir) == []
        assert kubelet.socket.exists()


def test_allocate_per_device_list_strategy(kubelet: FakeKubelet, tmp_path: Path) -> None:
    args = ["--inventory", DGX]
    for strategy in ("envvar", "cdi-annotations", "cdi-cri"):
        args += ["--device-list-strategy", strategy]
    with start(kubelet, tmp_path, *args):
        kubelet.wait_for(lambda: len(kubelet.healthy("nvidia.com/gpu")) == 8, what="8 GPUs")
        ids, response = kubelet.allocate("nvidia.com/gpu", 2)
        assert len(ids) == 2 and set(ids) <= set(DGX_UUIDS)
        names = [f"nvidia.com/gpu={i}" for i in ids]
        assert dict(response.envs) == {"NVIDIA_VISIBLE_DEVICES": ",".join(ids)}
        assert dict(response.annotations) == {"cdi.k8s.io/gpu-cdi_nvidia.com_gpu": ",".join(names)}
        assert [d.name for d in response.cdi_devices] == names
        assert list(response.devices) == [] and list(response.mounts) == []


def test_index_ids_and_device_specs(kubelet: FakeKubelet, tmp_path: Path) -> None:
    args = ["--inventory", MIG, "--mig-strategy", "mixed", "--device-id-strategy", "index"]
    with start(
        kubelet, tmp_path, *args, "--pass-device-specs", "--device-list-strategy", "cdi-cri"
    ):
        kubelet.wait_for(lambda: kubelet.devices("nvidia.com/mig-1g.5gb"), what="MIG devices")
        assert sorted(d.ID for d in kubelet.devices("nvidia.com/mig-1g.5gb")) == ["0:2", "0:3"]
        response = kubelet.allocate_ids("nvidia.com/mig-1g.5gb", ["0:3"])
        assert [d.name for d in response.cdi_devices] == ["nvidia.com/gpu=0:3"]
        paths = [d.container_path for d in response.devices]
        # the spec's control nodes, the parent GPU, the caps of GI 14 / CI 0 (3 + 9 * 14, + 1)
        assert sorted(paths) == [
            "/dev/nvidia-caps/nvidia-cap129",
            "/dev/nvidia-caps/nvidia-cap130",
            "/dev/nvidia-modeset",
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools",
            "/dev/nvidia0",
            "/dev/nvidiactl",
        ]
        assert all(d.host_path == d.container_path for d in response.devices)  # dev root /
        assert {d.permissions for d in response.devices} == {"rw"}


def test_unknown_device_fails_only_that_allocation(kubelet: FakeKubelet, tmp_path: Path) -> None:
    with start(kubelet, tmp_path, "--inventory", DGX) as plugin:
        kubelet.wait_for(lambda: len(kubelet.healthy("nvidia.com/gpu")) == 8, what="8 GPUs")
        with pytest.raises(grpc.RpcError) as caught:
            kubelet.allocate_ids("nvidia.com/gpu", [DGX_UUIDS[0], "GPU-not-there"])
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'GPU-not-there' was never advertised" in caught.value.details()
        ids, response = kubelet.allocate("nvidia.com/gpu", 1)
        assert response.envs["NVIDIA_VISIBLE_DEVICES"] == ids[0]
        assert "Allocate refused" in plugin.log()
        assert "Traceback" not in plugin.log()


def test_preferred_allocation_honours_must_include(kubelet: FakeKubelet, tmp_path: Path) -> None:
    with start(kubelet, tmp_path, "--inventory", DGX):
        kubelet.wait_for(lambda: len(kubelet.healthy("nvidia.com/gpu")) == 8, what="8 GPUs")
        chosen = kubelet.preferred("nvidia.com/gpu", DGX_UUIDS, [DGX_UUIDS[5]], 3)
        assert len(chosen) == 3 and DGX_UUIDS[5] in chosen and set(chosen) <= set(DGX_UUIDS)
        with pytest.raises(grpc.RpcError, match="cannot choose 9 devices"):
            kubelet.preferred("nvidia.com/gpu", DGX_UUIDS, [], 9)


def test_kubelet_restart_means_registering_again(kubelet: FakeKubelet, tmp_path: Path) -> None:
    with start(kubelet, tmp_path, "--inventory", DGX) as plugin:
        kubelet.wait_for(lambda: kubelet.registered("nvidia.com/gpu"), what="registration")
        for _ in range(2):
            restarted = time.monotonic()
            before = file_identity(str(kubelet.dir / "gpu-cdi-gpu.sock"))
            kubelet.restart()  # wipes the directory, the plugin's socket with it
            kubelet.wait_for(
                lambda at=restarted: kubelet.registered("nvidia.com/gpu", after=at),  # type: ignore[misc]
                timeout=5,
                what="registration after the restart",
            )
            assert plugin_sockets(kubelet.dir) == ["gpu-cdi-gpu.sock"]
            assert file_identity(str(kubelet.dir / "gpu-cdi-gpu.sock")) != before  # a new one
            kubelet.wait_for(lambda: len(kubelet.healthy("nvidia.com/gpu")) == 8, what="the list")
            _, response = kubelet.allocate("nvidia.com/gpu", 1)
            assert response.envs["NVIDIA_VISIBLE_DEVICES"].startswith("GPU-")
        assert len(kubelet.registrations) == 3
        assert plugin.log().count("kubelet (re)started") == 2


def test_kubelet_absent_at_start_is_awaited_and_said_once(tmp_path: Path) -> None:
    kubelet = FakeKubelet(tmp_path / "device-plugins")
    kubelet.dir.mkdir()
    with start(kubelet, tmp_path, "--inventory", DGX) as plugin:
        plugin.wait_log("waiting for kubelet")
        time.sleep(1.0)
        assert plugin.log().count("waiting for kubelet") == 1
        with kubelet:
            kubelet.wait_for(lambda: kubelet.registered("nvidia.com/gpu"), what="registration")
            kubelet.wait_for(lambda: len(kubelet.healthy("nvidia.com/gpu")) == 8, what="list")


def test_kubelet_socket_without_kubelet_is_retried_with_backoff(tmp_path: Path) -> None:
    kubelet = FakeKubelet(tmp_path / "device-plugins")
    kubelet.dir.mkdir()
    kubelet.socket.write_text("")  # a stale file: nothing listens
    with start(kubelet, tmp_path, "--inventory", DGX) as plugin:
        plugin.wait_log("does not answer")
        time.sleep(1.5)
        assert plugin.log().count("does not answer") == 1
        kubelet.start()  # replaces the stale file: a new inode
        try:
            kubelet.wait_for(lambda: kubelet.registered("nvidia.com/gpu"), what="registration")
        finally:
            kubelet.stop()


def test_refused_resource_is_said_once_and_the_rest_served(tmp_path: Path) -> None:
    def refuse(request: object) -> str | None:
        name = request.resource_name  # type: ignore[attr-defined]
        return "resource mig-2g.10gb is taken" if name.endswith("mig-2g.10gb") else None

    with (
        FakeKubelet(tmp_path / "device-plugins", refuse=refuse) as kubelet,
        start(kubelet, tmp_path, "--inventory", MIG, "--mig-strategy", "mixed") as plugin,
    ):
        kubelet.wait_for(lambda: len(kubelet.registrations) == 5, what="5 registrations")
        plugin.wait_log("kubelet refused to register nvidia.com/mig-2g.10gb")
        time.sleep(1.6)  # backoff 0.5 s, 1 s: retried, not said again
        assert len(kubelet.refusals) >= 2
        assert plugin.log().count("refused to register") == 1
        _, response = kubelet.allocate("nvidia.com/mig-1g.5gb", 1)
        assert response.envs["NVIDIA_VISIBLE_DEVICES"].startswith("MIG-")
        kubelet.refuse = None
        kubelet.wait_for(
            lambda: kubelet.registered("nvidia.com/mig-2g.10gb"), timeout=10, what="retry"
        )
        plugin.wait_log("registered after all")


def test_register_request_is_what_kubelet_expects(kubelet: FakeKubelet, tmp_path: Path) -> None:
    seen = []

    def record(request: object) -> None:
        seen.append(request)

    kubelet.refuse = record  # type: ignore[assignment]
    with start(kubelet, tmp_path, "--inventory", DGX):
        kubelet.wait_for(lambda: kubelet.registered("nvidia.com/gpu"), what="registration")
    (request,) = seen
    assert request.version == VERSION
    assert request.endpoint == "gpu-cdi-gpu.sock"  # relative to kubelet's directory
    assert request.options.get_preferred_allocation_available


def test_a_second_plugin_takes_over_without_a_fight(kubelet: FakeKubelet, tmp_path: Path) -> None:
    old = Plugin(
        ["--kubelet-socket", str(kubelet.socket), "--inventory", DGX], tmp_path / "old.log"
    )
    with old:
        kubelet.wait_for(lambda: kubelet.registered("nvidia.com/gpu"), what="registration")
        started = time.monotonic()
        with Plugin(
            ["--kubelet-socket", str(kubelet.socket), "--inventory", DGX], tmp_path / "new.log"
        ) as new:
            kubelet.wait_for(
                lambda: kubelet.registered("nvidia.com/gpu", after=started), what="the new one"
            )
            old.wait_log("is served by another process now; leaving it")
            time.sleep(1.0)
            assert old.log().count("served by another process") == 1
            assert len(kubelet.registrations) == 2  # no flapping
            # the old one goes (grpcio removes the socket path as it stops): the new one
            # serves and registers again
            stopped = time.monotonic()
            assert old.stop() == 0
            kubelet.wait_for(
                lambda: kubelet.registered("nvidia.com/gpu", after=stopped), what="re-registration"
            )
            _, response = kubelet.allocate("nvidia.com/gpu", 1)
            assert response.envs["NVIDIA_VISIBLE_DEVICES"].startswith("GPU-")
            assert "Traceback" not in new.log() + old.log()
