"""The pure builder: nvidia-ctk parity from inventories, and every option's effect."""

from __future__ import annotations

from typing import Any

import pytest

from cdi.dump import to_data
from cdi.nvidia import build as b
from cdi.nvidia import inventory
from cdi.nvidia.inventory import Inventory
from tests.generator import parity
from tests.generator.hosts import INVENTORIES
from tests.generator.refs import REFERENCE, reference
from tests.require import need


def inv(name: str) -> Inventory:
    """A shipped inventory (specs/inventories/, discovered on the fake host)."""
    path = INVENTORIES / f"{name}.yaml"
    need(path.is_file(), f"no inventory for {name}")
    return inventory.load(str(path))


def data(built: b.Built) -> dict[str, Any]:
    """The built spec as CDI data, to compare with nvidia-ctk's."""
    return to_data(built.spec)


def devices(built: b.Built) -> dict[str, dict[str, Any]]:
    return {d["name"]: d["containerEdits"] for d in data(built)["devices"]}


@pytest.mark.parametrize(
    ("topology", "ref", "strategies"),
    [
        ("dgx-a100", "dgxa100.default.yaml", b.Options().strategies),
        ("dgx-a100", "dgxa100.default.json", b.Options().strategies),
        ("dgx-a100-mig", "dgxa100-mig.default.yaml", b.Options().strategies),
        ("dgx-a100-mig", "dgxa100-mig.strategy-uuid.yaml", ("uuid",)),
    ],
)
def test_build_equals_nvidia_ctk(topology: str, ref: str, strategies: tuple[str, ...]) -> None:
    need(REFERENCE.is_dir(), f"reference specs not found at {REFERENCE}")
    built = b.build(inv(topology), b.Options(strategies=strategies))
    ours, theirs = parity.normalize(data(built)), parity.normalize(reference(ref))
    assert parity.differences(ours, theirs) == []
    assert built.notes == ()


def test_same_input_same_output() -> None:
    assert b.build(inv("dgx-a100-mig"), b.Options()) == b.build(inv("dgx-a100-mig"), b.Options())


def test_type_index_and_device_selection() -> None:
    host = inv("dgx-a100-mig")
    built = b.build(host, b.Options(strategies=("type-index",), device_ids=("2", "0:1")))
    assert sorted(devices(built)) == ["all", "gpu2", "mig0:1"]
    all_nodes = {n["path"] for n in devices(built)["all"]["deviceNodes"]}  # type: ignore[attr-defined]
    assert "/dev/nvidia2" in all_nodes and "/dev/nvidia0" in all_nodes
    assert "/dev/nvidia1" not in all_nodes
    uuid = host.gpus[3].uuid
    by_uuid = b.build(host, b.Options(device_ids=(uuid,), all_device=False))
    assert sorted(devices(by_uuid)) == ["3", uuid]


def test_unknown_device_id_is_an_error() -> None:
    with pytest.raises(b.BuildError, match="--device-id '9': no such GPU or MIG device"):
        b.build(inv("dgx-a100"), b.Options(device_ids=("9",)))


def test_none_gives_common_edits_only() -> None:
    built = b.build(inv("dgx-a100"), b.Options(device_ids=("none",)))
    assert data(built)["devices"] == []
    assert data(built)["containerEdits"]["deviceNodes"]
    assert data(built)["cdiVersion"] == "0.3.0"


def test_hooks_chained_by_default_and_split_on_request() -> None:
    host = inv("dgx-a100")
    chained = b.build(host, b.Options(hook_path="/opt/bin/gpu-cdi-hook"))
    (hook,) = data(chained)["containerEdits"]["hooks"]
    assert hook["path"] == "/opt/bin/gpu-cdi-hook"
    actions = [a for a in hook["args"] if a in b.HOOKS]
    assert actions == [
        "create-symlinks",
        "enable-cuda-compat",
        "update-ldcache",
        "disable-device-node-modification",
        "update-application-profile",
    ]
    # One hook process per container: no device has hooks of its own.
    assert all("hooks" not in edits for edits in devices(chained).values())
    split = b.build(host, b.Options(hook_per_action=True))
    assert [h["args"][1] for h in data(split)["containerEdits"]["hooks"]] == actions
    assert parity.hook_effects(data(split)["containerEdits"]["hooks"]) == parity.hook_effects(
        [hook]
    )


def test_disable_and_enable_hooks() -> None:
    host = inv("dgx-a100")
    none = b.build(host, b.Options(hooks=frozenset()))
    assert "hooks" not in data(none)["containerEdits"]
    assert all("hooks" not in e for e in devices(none).values())
    chmod = b.build(host, b.Options(hooks=b.DEFAULT_HOOKS | {"chmod"}))
    # In the common hook, done in containers that have /dev/dri (as nvidia-ctk's per-GPU hook).
    (hook,) = data(chmod)["containerEdits"]["hooks"]
    assert hook["args"][-5:] == ["chmod", "--mode", "755", "--path", "/dev/dri"]
    effects = parity.normalize(data(chmod))["devices"]["0"]["hooks"]
    assert effects["chmod"] == {("--mode", "755"), ("--path", "/dev/dri")}
    off = b.build(host, b.Options(hooks=b.DEFAULT_HOOKS - {"update-application-profile"}))
    assert "update-application-profile" not in data(off)["containerEdits"]["hooks"][0]["args"]


def test_driver_root_and_dev_root_become_host_paths() -> None:
    host = inv("dgx-a100")._replace(driver_root="/run/nvidia/driver", dev_root="/host")
    built = b.build(host, b.Options())
    mount = data(built)["containerEdits"]["mounts"][0]
    assert mount["hostPath"] == "/run/nvidia/driver" + mount["containerPath"]
    node = devices(built)["0"]["deviceNodes"][0]  # type: ignore[index]
    assert node == {**node, "path": "/dev/nvidia0", "hostPath": "/host/dev/nvidia0"}


def test_lost_gpu_left_out_with_a_note() -> None:
    host = inv("dgx-a100")
    lost = host.gpus[3]._replace(error="NVML reports it failing (GPU is lost)")
    built = b.build(host._replace(gpus=(*host.gpus[:3], lost, *host.gpus[4:])), b.Options())
    assert "3" not in devices(built) and "2" in devices(built)
    (note,) = built.notes
    assert note.startswith(f"GPU 3 ({lost.uuid}, 0000:4e:00.0) left out: NVML reports")


def test_missing_mig_cap_node_leaves_the_mig_device_out() -> None:
    host = inv("dgx-a100-mig")
    nodes = tuple(n for n in host.nodes if n.path != "/dev/nvidia-caps/nvidia-cap158")
    built = b.build(host._replace(nodes=nodes), b.Options())
    assert "1:2" not in devices(built) and "1:1" in devices(built)
    assert any("/dev/nvidia-caps/nvidia-cap158 missing" in n for n in built.notes)


def test_no_additional_gids_gives_0_5_0() -> None:
    built = b.build(inv("dgx-a100"), b.Options(additional_gids=False))
    assert data(built)["cdiVersion"] == "0.5.0"
    assert all("additionalGids" not in e for e in devices(built).values())


def test_management_mode() -> None:
    built = b.build(
        inv("dgx-a100-mig"), b.Options(mode="management", vendor="management.nvidia.com")
    )
    assert list(devices(built)) == ["all"]
    paths = {n["path"] for n in devices(built)["all"]["deviceNodes"]}  # type: ignore[attr-defined]
    assert {"/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap1"} <= paths
    assert "/dev/nvidia-caps-imex-channels/channel0" in paths
    common = data(built)["containerEdits"]
    effects = parity.hook_effects(common["hooks"])
    assert "disable-device-node-modification" not in effects
    containers = {m["containerPath"] for m in common["mounts"]}
    assert "/usr/bin/nvidia-smi" in containers and "/usr/bin/nvidia-xconfig" not in containers


def test_imex_mode() -> None:
    built = b.build(inv("dgx-a100"), b.Options(mode="imex"))
    assert sorted(devices(built)) == ["0", "1", "all"]
    node = devices(built)["1"]["deviceNodes"][0]  # type: ignore[index]
    assert node["hostPath"] == "/dev/nvidia-caps-imex-channels/channel1"
    assert data(built)["cdiVersion"] == "0.5.0"
    with pytest.raises(b.BuildError, match="IMEX channel"):
        b.build(inv("dgx-a100"), b.Options(mode="imex", device_ids=("7",)))


def test_built_specs_load_back_at_their_version() -> None:
    from cdi.codec import parse_spec
    from cdi.dump import dump_spec

    for options in (b.Options(), b.Options(additional_gids=False), b.Options(device_ids=("none",))):
        built = b.build(inv("dgx-a100-mig"), options)
        assert parse_spec(dump_spec(built.spec), "test.yaml") == built.spec
    assert b.build(inv("dgx-a100-mig"), b.Options()).reason.endswith("additionalGids")
    assert b.build(inv("dgx-a100-mig"), b.Options()).gids == (44, 105)
