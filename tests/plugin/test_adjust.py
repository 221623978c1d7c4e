"""Merged CDI edits -> NRI ContainerAdjustment, and native CDI names."""

from __future__ import annotations

import os

import pytest

from cdi.errors import InjectionError
from cdi.spec import ContainerEdits, DeviceNode, Hook, Mount
from nri_plugin.adjust import AdjustError, native_adjustment, resolved_adjustment


def test_every_edit_maps_to_its_nri_field() -> None:
    edits = ContainerEdits(
        env=["A=1", "B=x=y", "A=2"],
        device_nodes=[
            DeviceNode("/dev/nvidia0", type="c", major=195, minor=0, file_mode=0o666),
            DeviceNode("/dev/dri/renderD128", type="c", major=226, minor=128, uid=0, gid=105),
        ],
        mounts=[Mount("/host/lib.so", "/usr/lib/lib.so", ["ro", "bind"])],
        hooks=[
            Hook("createContainer", "/bin/h", ["h", "a"], ["E=1"], timeout=5),
            Hook("createRuntime", "/bin/r"),
            Hook("prestart", "/bin/p"),
            Hook("startContainer", "/bin/s"),
            Hook("poststart", "/bin/ps"),
            Hook("poststop", "/bin/pst"),
        ],
        additional_gids=[105],
    )
    adj = resolved_adjustment(edits, [("NVIDIA_VISIBLE_DEVICES", "void")])
    assert [(e.key, e.value) for e in adj.env] == [
        ("A", "2"),
        ("B", "x=y"),
        ("NVIDIA_VISIBLE_DEVICES", "void"),
    ]
    first, second = adj.linux.devices
    assert (first.path, first.type, first.major, first.minor) == ("/dev/nvidia0", "c", 195, 0)
    assert first.HasField("file_mode") and first.file_mode.value == 0o666
    assert not first.HasField("uid") and not first.HasField("gid")
    assert second.uid.value == 0 and second.gid.value == 105 and not second.HasField("file_mode")
    (mount,) = adj.mounts
    assert (mount.source, mount.destination, mount.type) == ("/host/lib.so", "/usr/lib/lib.so", "")
    assert list(mount.options) == ["ro", "bind"]
    (hook,) = adj.hooks.create_container
    assert (hook.path, list(hook.args), list(hook.env), hook.timeout.value) == (
        "/bin/h",
        ["h", "a"],
        ["E=1"],
        5,
    )
    assert [h.path for h in adj.hooks.create_runtime] == ["/bin/r"]
    assert [h.path for h in adj.hooks.prestart] == ["/bin/p"]
    assert [h.path for h in adj.hooks.start_container] == ["/bin/s"]
    assert [h.path for h in adj.hooks.poststart] == ["/bin/ps"]
    assert [h.path for h in adj.hooks.poststop] == ["/bin/pst"]
    assert not adj.hooks.create_runtime[0].HasField("timeout")
    assert len(adj.CDI_devices) == 0


def test_repeated_nodes_mounts_and_hooks_appear_once_at_the_last_position() -> None:
    node0 = DeviceNode("/dev/nvidia0", type="c", major=195, minor=0)
    node1 = DeviceNode("/dev/nvidia1", type="c", major=195, minor=1)
    hook = Hook("createContainer", "/bin/h", ["h"])
    edits = ContainerEdits(
        device_nodes=[node0, node1, node0],
        hooks=[hook, Hook("createContainer", "/bin/other"), hook],
        mounts=[Mount("/a", "/y", ["ro"]), Mount("/b", "/x"), Mount("/c", "/y", ["rw"])],
    )
    adj = resolved_adjustment(edits)
    assert [d.path for d in adj.linux.devices] == ["/dev/nvidia1", "/dev/nvidia0"]
    assert [h.path for h in adj.hooks.create_container] == ["/bin/h", "/bin/other"]
    # mounts: the last definition of /y, placed where containerd sorts it (next test)
    assert [(m.source, m.destination) for m in adj.mounts] == [("/b", "/x"), ("/c", "/y")]


def test_mounts_are_sent_in_the_order_containerd_sorts_them_into() -> None:
    # NRI's runtime-tools/generate re-sorts all mounts by (depth of the cleaned destination,
    # destination) after applying them; sent in that order, its sort finds them in place.
    edits = ContainerEdits(
        mounts=[
            Mount("/h/1", "/usr/lib/x86_64-linux-gnu/vdpau/libvdpau_nvidia.so.1"),
            Mount("/h/2", "/usr/bin/nvidia-smi"),
            Mount("/h/3", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"),
            Mount("/h/4", "/run/nvidia-persistenced/socket"),
            Mount("/h/5", "/opt//deep/./x"),  # cleaned: /opt/deep/x, depth 3
            Mount("/h/6", "/lib/firmware/nvidia/550.1/gsp_ga10x.bin"),
        ]
    )
    assert [m.destination for m in resolved_adjustment(edits).mounts] == [
        "/opt//deep/./x",
        "/run/nvidia-persistenced/socket",
        "/usr/bin/nvidia-smi",
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        "/lib/firmware/nvidia/550.1/gsp_ga10x.bin",
        "/usr/lib/x86_64-linux-gnu/vdpau/libvdpau_nvidia.so.1",
    ]


def test_device_nodes_are_completed_from_the_host() -> None:
    info = os.stat("/dev/null")
    adj = resolved_adjustment(ContainerEdits(device_nodes=[DeviceNode("/dev/x", "/dev/null")]))
    (device,) = adj.linux.devices
    assert (device.path, device.type) == ("/dev/x", "c")
    assert (device.major, device.minor) == (os.major(info.st_rdev), os.minor(info.st_rdev))


def test_missing_host_node_is_an_injection_error() -> None:
    with pytest.raises(InjectionError, match='failed to stat CDI host device "/dev/nope"'):
        resolved_adjustment(ContainerEdits(device_nodes=[DeviceNode("/dev/nope")]))


def test_unknown_hook_stage() -> None:
    with pytest.raises(AdjustError, match="unknown hookName 'onBoot'"):
        resolved_adjustment(ContainerEdits(hooks=[Hook("onBoot", "/bin/h")]))


def test_native_adjustment_carries_names_and_env_only() -> None:
    adj = native_adjustment(["nvidia.com/gpu=0", "nvidia.com/gpu=1"], [("K", "v")])
    assert [d.name for d in adj.CDI_devices] == ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]
    assert [(e.key, e.value) for e in adj.env] == [("K", "v")]
    assert len(adj.linux.devices) == 0 and len(adj.mounts) == 0
