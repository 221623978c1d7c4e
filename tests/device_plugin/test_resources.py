"""Resources from the shipped inventories under each MIG strategy, IDs, replicas, bad input."""

from __future__ import annotations

import attrs
import pytest

from cdi.nvidia import inventory
from cdi.nvidia.build import Options, build
from cdi.nvidia.inventory import Inventory, MigDevice
from device_plugin import resources
from device_plugin.config import Settings, SharedResource, TimeSlicing
from device_plugin.resources import ResourceError, mig_profile, mig_resource, resource_name_error
from tests.device_plugin.support import INVENTORIES


def inv(name: str) -> Inventory:
    return inventory.load(str(INVENTORIES / f"{name}.yaml"))


def spec_names(host: Inventory) -> set[str]:
    return {d.name for d in build(host, Options()).spec.devices}


def offered(host: Inventory, **settings: object) -> dict[str, list[str]]:
    found, _ = resources.build(host, Settings(**settings), spec_names(host))  # type: ignore[arg-type]
    return {r.name: [d.id for d in r.devices] for r in found}


def test_full_gpus_in_nvml_order_by_uuid_and_index() -> None:
    host = inv("dgx-a100")
    assert offered(host) == {"nvidia.com/gpu": [g.uuid for g in host.gpus]}
    assert offered(host, device_id_strategy="index") == {
        "nvidia.com/gpu": [str(i) for i in range(8)]
    }


def test_mig_strategies_on_the_mixed_host() -> None:
    host = inv("dgx-a100-mig")
    full = [g.uuid for g in host.gpus[2:]]
    # none: the MIG-enabled GPUs 0 and 1 are not offered at all
    assert offered(host) == {"nvidia.com/gpu": full}
    mixed = offered(host, mig_strategy="mixed")
    assert mixed["nvidia.com/gpu"] == full
    migs = {m.uuid: m for g in host.gpus for m in g.migs}
    for name, ids in mixed.items():
        if name != "nvidia.com/gpu":
            assert {mig_resource(mig_profile(migs[i])) for i in ids} == {name}
    assert sorted(mixed) == [
        "nvidia.com/gpu",
        "nvidia.com/mig-1c.3g.20gb",
        "nvidia.com/mig-1g.5gb",
        "nvidia.com/mig-2c.3g.20gb",
        "nvidia.com/mig-2g.10gb",
        "nvidia.com/mig-3g.20gb",
    ]
    assert offered(host, mig_strategy="mixed", device_id_strategy="index")[
        "nvidia.com/mig-1c.3g.20gb"
    ] == ["1:1"]


def test_single_is_refused_on_mixed_hosts() -> None:
    host = inv("dgx-a100-mig")
    with pytest.raises(ResourceError, match="GPUs 0, 1 are, GPUs 2, 3, 4, 5, 6, 7 are not"):
        offered(host, mig_strategy="single")
    only_mig = host._replace(gpus=host.gpus[:2])
    with pytest.raises(ResourceError) as caught:
        offered(only_mig, mig_strategy="single")
    assert "one MIG profile on the node, found 3g.20gb (first 0:0), 2g.10gb (first 0:1)" in str(
        caught.value
    )


def test_single_on_uniform_mig_and_without_mig() -> None:
    host = inv("scale-64")
    single = offered(host, mig_strategy="single")
    assert list(single) == ["nvidia.com/gpu"] and len(single["nvidia.com/gpu"]) == 448
    assert offered(inv("dgx-h100"), mig_strategy="single") == offered(inv("dgx-h100"))


def test_mixed_scale_64() -> None:
    assert {k: len(v) for k, v in offered(inv("scale-64"), mig_strategy="mixed").items()} == {
        "nvidia.com/mig-1g.5gb": 448
    }


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", "1g.5gb"),
        ("NVIDIA A100-SXM4-40GB MIG 1c.3g.20gb", "1c.3g.20gb"),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb+me", "1g.10gb+me"),
        ("MIG 2g.10gb", "2g.10gb"),
        ("3g.20gb", "3g.20gb"),
    ],
)
def test_mig_profile_and_resource(name: str, profile: str) -> None:
    mig = MigDevice(0, "MIG-x", 1, 0, name)
    assert mig_profile(mig) == profile
    assert mig_resource(profile) == "nvidia.com/mig-" + profile.replace("+", ".")


def test_devices_missing_from_the_spec_are_left_out_with_a_note() -> None:
    host = inv("dgx-a100")
    nodes = tuple(n for n in host.nodes if n.path != "/dev/nvidia3")
    trimmed = host._replace(nodes=nodes)
    found, notes = resources.build(trimmed, Settings(), spec_names(trimmed))
    assert host.gpus[3].uuid not in [d.id for d in found[0].devices]
    assert len(found[0].devices) == 7
    assert notes == (f"GPU 3 ({host.gpus[3].uuid}) left out: not in the CDI spec for this host",)


def test_a_failing_gpu_with_a_uuid_is_offered_one_without_is_not() -> None:
    host = inv("dgx-a100")
    gpus = list(host.gpus)
    gpus[1] = gpus[1]._replace(error="NVML reports it failing (GPU is lost)")
    gpus[2] = gpus[2]._replace(uuid="", error="NVML reports it failing (Unknown Error)")
    broken = host._replace(gpus=tuple(gpus))
    found, notes = resources.build(broken, Settings(), spec_names(broken))
    ids = [d.id for d in found[0].devices]
    assert gpus[1].uuid in ids and len(ids) == 7  # advertised; the daemon marks it unhealthy
    assert notes == (
        "GPU 2 (0000:47:00.0) left out: NVML reports it failing (Unknown Error) "
        "and its UUID is unknown",
    )


def test_replicas() -> None:
    host = inv("dgx-a100")
    sharing = TimeSlicing((SharedResource("nvidia.com/gpu", 3),))
    found, notes = resources.build(host, Settings(time_slicing=sharing), spec_names(host))
    (gpu,) = found
    assert gpu.name == "nvidia.com/gpu" and gpu.replicas == 3
    assert [d.id for d in gpu.devices[:4]] == [
        f"{host.gpus[0].uuid}::0",
        f"{host.gpus[0].uuid}::1",
        f"{host.gpus[0].uuid}::2",
        f"{host.gpus[1].uuid}::0",
    ]
    assert {d.name for d in gpu.devices[:3]} == {host.gpus[0].uuid}
    assert notes == ("nvidia.com/gpu: each of 8 devices shared 3 times",)
    renamed = attrs.evolve(sharing, rename_by_default=True)
    found, _ = resources.build(host, Settings(time_slicing=renamed), spec_names(host))
    assert found[0].name == "nvidia.com/gpu.shared"


def test_replicas_bad_names_and_absent_resources() -> None:
    host = inv("dgx-a100")
    sharing = TimeSlicing((SharedResource("nvidia.com/gpu", 2, "Big GPU"),))
    with pytest.raises(ResourceError, match=r"resource name 'nvidia\.com/Big GPU'"):
        resources.build(host, Settings(time_slicing=sharing), spec_names(host))
    sharing = TimeSlicing((SharedResource("nvidia.com/mig-1g.5gb", 2),))
    _, notes = resources.build(host, Settings(time_slicing=sharing), spec_names(host))
    assert notes == ("sharing.timeSlicing: this node has no nvidia.com/mig-1g.5gb: nothing shared",)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("nvidia.com/gpu", True),
        ("nvidia.com/mig-1c.3g.20gb", True),
        ("example.com/gpu.shared", True),
        ("gpu", False),
        ("kubernetes.io/gpu", False),
        ("nvidia.com/", False),
        ("Nvidia.com/gpu", False),
        ("nvidia.com/" + "x" * 64, False),
    ],
)
def test_resource_names(name: str, ok: bool) -> None:
    assert (resource_name_error(name) is None) is ok
