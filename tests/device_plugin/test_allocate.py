"""What Allocate answers per strategy, and what it refuses."""

from __future__ import annotations

import pytest

from cdi.nvidia import inventory
from cdi.nvidia.build import Options, build
from device_plugin import allocate, resources
from device_plugin.allocate import AllocateError, Handout, annotation_key_for
from device_plugin.config import Settings, SharedResource, TimeSlicing
from device_plugin.node import spec_nodes
from tests.device_plugin.support import INVENTORIES

HOST = inventory.load(str(INVENTORIES / "dgx-a100.yaml"))
SPEC = build(HOST, Options()).spec
NAMES = {d.name for d in SPEC.devices}


def resource(**settings: object) -> resources.Resource:
    found, _ = resources.build(HOST, Settings(**settings), NAMES)  # type: ignore[arg-type]
    return found[0]


def healthy(_: resources.Device) -> None:
    return None


def test_every_strategy_names_the_spec_devices() -> None:
    gpu = resource()
    devices = allocate.granted(gpu, [HOST.gpus[4].uuid, HOST.gpus[1].uuid], healthy)
    handout = Handout(("envvar", "cdi-annotations", "cdi-cri"))
    response = allocate.container_response(gpu, devices, handout)
    names = [f"nvidia.com/gpu={HOST.gpus[4].uuid}", f"nvidia.com/gpu={HOST.gpus[1].uuid}"]
    assert all(name.partition("=")[2] in NAMES for name in names)
    assert dict(response.envs) == {
        "NVIDIA_VISIBLE_DEVICES": f"{HOST.gpus[4].uuid},{HOST.gpus[1].uuid}"
    }
    assert dict(response.annotations) == {"cdi.k8s.io/gpu-cdi_nvidia.com_gpu": ",".join(names)}
    assert [d.name for d in response.cdi_devices] == names
    assert not response.devices and not response.mounts


def test_only_the_chosen_strategies() -> None:
    gpu = resource()
    devices = allocate.granted(gpu, [HOST.gpus[0].uuid], healthy)
    response = allocate.container_response(
        gpu, devices, Handout(("cdi-cri",), kind="example.com/accel")
    )
    assert not response.envs and not response.annotations
    assert [d.name for d in response.cdi_devices] == [f"example.com/accel={HOST.gpus[0].uuid}"]
    response = allocate.container_response(
        gpu, devices, Handout(("cdi-annotations",), annotation_prefix="cdi.example.org/")
    )
    assert list(response.annotations) == ["cdi.example.org/gpu-cdi_nvidia.com_gpu"]


def test_device_specs_come_from_the_spec() -> None:
    gpu = resource(device_id_strategy="index")
    devices = allocate.granted(gpu, ["2"], healthy)
    handout = Handout(("envvar",), nodes=spec_nodes(SPEC))
    response = allocate.container_response(gpu, devices, handout)
    paths = [d.container_path for d in response.devices]
    assert sorted(paths) == [
        "/dev/dri/card3",
        "/dev/dri/renderD130",
        "/dev/nvidia-modeset",
        "/dev/nvidia-uvm",
        "/dev/nvidia-uvm-tools",
        "/dev/nvidia2",
        "/dev/nvidiactl",
    ]
    assert response.envs["NVIDIA_VISIBLE_DEVICES"] == "2"


def test_replicas_of_one_gpu_count_once() -> None:
    shared = resource(time_slicing=TimeSlicing((SharedResource("nvidia.com/gpu", 4),)))
    uuid = HOST.gpus[0].uuid
    devices = allocate.granted(shared, [f"{uuid}::1", f"{uuid}::3"], healthy)
    response = allocate.container_response(shared, devices, Handout(("envvar", "cdi-cri")))
    assert response.envs["NVIDIA_VISIBLE_DEVICES"] == uuid
    assert [d.name for d in response.cdi_devices] == [f"nvidia.com/gpu={uuid}"]


def test_refusals_name_the_device() -> None:
    gpu = resource()
    with pytest.raises(AllocateError) as caught:
        allocate.granted(gpu, ["GPU-0000"], healthy)
    assert str(caught.value) == (
        f"nvidia.com/gpu: device 'GPU-0000' was never advertised by this plugin (it has 8: "
        f"{HOST.gpus[0].uuid}, {HOST.gpus[1].uuid}, ...)"
    )
    sick = HOST.gpus[3].uuid

    def why(device: resources.Device) -> str | None:
        return "XID 79 (GPU has fallen off the bus)" if device.uuid == sick else None

    with pytest.raises(AllocateError, match=f"device {sick} is unhealthy: XID 79"):
        allocate.granted(gpu, [HOST.gpus[0].uuid, sick], why)


def test_fail_requests_greater_than_one() -> None:
    sharing = TimeSlicing(
        (SharedResource("nvidia.com/gpu", 2),), fail_requests_greater_than_one=True
    )
    shared = resource(time_slicing=sharing)
    ids = [d.id for d in shared.devices[:3]]
    assert len(allocate.granted(shared, ids[:1], healthy)) == 1
    with pytest.raises(AllocateError, match="failRequestsGreaterThanOne allows one"):
        allocate.granted(shared, ids, healthy)


def test_annotation_key_is_valid_and_bounded() -> None:
    assert (
        annotation_key_for("nvidia.com/mig-1c.3g.20gb")
        == "cdi.k8s.io/gpu-cdi_nvidia.com_mig-1c.3g.20gb"
    )
    long = annotation_key_for("averyveryveryverylongvendor.example.com/" + "x" * 40)
    name = long.partition("/")[2]
    assert long.startswith("cdi.k8s.io/gpu-cdi_") and len(name) <= 63
