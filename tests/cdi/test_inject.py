"""Injection into an OCI spec, following the reference 0.8.0's InjectDevices."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from cdi.errors import InjectionError
from cdi.inject import clean_path, fill_device_node, inject_devices, merge_edits
from cdi.registry import Registry
from cdi.spec import DeviceNode
from tests.cdi.specs import write

GPU_SPEC = """\
cdiVersion: "0.7.0"
kind: nvidia.com/gpu
containerEdits:
  env: [NVIDIA_VISIBLE_DEVICES=void]
  hooks:
    - {hookName: createContainer, path: /usr/bin/gpu-cdi-hook, args: [gpu-cdi-hook, update-ldcache]}
  mounts:
    - {hostPath: /host/nvidia-smi, containerPath: /usr/bin/nvidia-smi, options: [ro, bind]}
devices:
  - name: "0"
    containerEdits:
      env: [GPU=0]
      deviceNodes:
        - {path: /dev/nvidia0, hostPath: /dev/null}
        - {path: /dev/nvidiactl, hostPath: /dev/zero, permissions: rw, fileMode: 438}
      hooks:
        - {hookName: createContainer, path: /usr/bin/gpu-cdi-hook, args: [x, "0"]}
  - name: "1"
    containerEdits:
      env: [GPU=1]
      deviceNodes:
        - {path: /dev/nvidia1, hostPath: /dev/random}
        - {path: /dev/nvidiactl, hostPath: /dev/zero}
      hooks:
        - {hookName: poststop, path: /bin/stop, env: [A=1], timeout: 3}
      mounts:
        - {hostPath: /lib/x, containerPath: /usr/lib/x, options: [ro]}
  - name: fixed
    containerEdits:
      deviceNodes:
        - {path: /dev/fixed, hostPath: /nonexistent, type: c, major: 7, minor: 9, uid: 5}
      additionalGids: [0, 44, 44, 105]
  - name: missing
    containerEdits:
      deviceNodes: [{path: /dev/missing}]
"""

OTHER_SPEC = """\
cdiVersion: "0.7.0"
kind: vendor.com/rdt
devices:
  - name: a
    containerEdits: {intelRdt: {closID: a}}
  - name: b
    containerEdits: {intelRdt: {closID: b, enableCMT: true}, additionalGids: [7]}
"""


def containerd_spec() -> dict[str, Any]:
    return {
        "ociVersion": "1.1.0",
        "process": {
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [44]},
            "args": ["sleep", "inf"],
            "env": ["PATH=/usr/bin", "NVIDIA_VISIBLE_DEVICES=all"],
            "cwd": "/",
        },
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
            {"destination": "/usr/bin/nvidia-smi", "source": "/old", "options": ["bind"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs"},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs"},
        ],
        "hooks": {"createContainer": [{"path": "/existing"}]},
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "devices": [{"path": "/dev/nvidia1", "type": "c", "major": 1, "minor": 1}],
            "namespaces": [{"type": "pid"}],
        },
    }


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    write(tmp_path, "gpu.yaml", GPU_SPEC)
    write(tmp_path, "rdt.yaml", OTHER_SPEC)
    return Registry([str(tmp_path)])


def test_inject_two_gpus(registry: Registry) -> None:
    original = containerd_spec()
    before = copy.deepcopy(original)
    result = inject_devices(original, ["nvidia.com/gpu=0", "nvidia.com/gpu=1"], registry)
    assert original == before  # the input is never modified
    assert result["process"]["env"] == [
        "PATH=/usr/bin",
        "NVIDIA_VISIBLE_DEVICES=all",  # pre-existing: kept, CDI's copy appended (0.8)
        "NVIDIA_VISIBLE_DEVICES=void",
        "GPU=1",  # CDI values replace earlier CDI values in place
    ]
    assert result["linux"]["devices"] == [
        {"path": "/dev/nvidia0", "type": "c", "major": 1, "minor": 3, "uid": 1000, "gid": 1000},
        {"path": "/dev/nvidia1", "type": "c", "major": 1, "minor": 8, "uid": 1000, "gid": 1000},
        {"path": "/dev/nvidiactl", "type": "c", "major": 1, "minor": 5, "uid": 1000, "gid": 1000},
    ]
    assert result["linux"]["resources"]["devices"] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rw"},
        {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
    ]
    # nvidiactl from device 0 carried fileMode; device 1's copy replaced it at the same path
    assert [m["destination"] for m in result["mounts"]] == [
        "/dev",
        "/proc",
        "/run",
        "/sys",
        "/dev/pts",
        "/usr/bin/nvidia-smi",
        "/usr/lib/x",
    ]
    smi = [m for m in result["mounts"] if m["destination"] == "/usr/bin/nvidia-smi"]
    assert smi == [
        {
            "destination": "/usr/bin/nvidia-smi",
            "source": "/host/nvidia-smi",
            "options": ["ro", "bind"],
        }
    ]
    assert result["hooks"] == {
        "createContainer": [
            {"path": "/existing"},
            {"path": "/usr/bin/gpu-cdi-hook", "args": ["gpu-cdi-hook", "update-ldcache"]},
            {"path": "/usr/bin/gpu-cdi-hook", "args": ["x", "0"]},
        ],
        "poststop": [{"path": "/bin/stop", "env": ["A=1"], "timeout": 3}],
    }
    assert result["root"] is original["root"]  # untouched parts are shared, not copied


def test_device_requested_twice_is_merged_once(registry: Registry) -> None:
    once = inject_devices(containerd_spec(), ["nvidia.com/gpu=0"], registry)
    twice = inject_devices(containerd_spec(), ["nvidia.com/gpu=0", "nvidia.com/gpu=0"], registry)
    assert once == twice


def test_spec_level_edits_once_per_spec(registry: Registry) -> None:
    resolved = [
        registry.resolve(n) for n in ("nvidia.com/gpu=0", "vendor.com/rdt=a", "nvidia.com/gpu=1")
    ]
    edits = merge_edits(resolved)  # type: ignore[arg-type]
    assert edits.env == ("NVIDIA_VISIBLE_DEVICES=void", "GPU=0", "GPU=1")
    assert len(edits.hooks) == 3
    assert edits.intel_rdt is not None and edits.intel_rdt.clos_id == "a"


def test_fixed_nodes_rdt_and_gids(registry: Registry) -> None:
    spec: dict[str, Any] = {"process": {"user": {"uid": 0, "gid": 0}}}
    result = inject_devices(
        spec, ["nvidia.com/gpu=fixed", "vendor.com/rdt=a", "vendor.com/rdt=b"], registry
    )
    assert result["linux"]["devices"] == [
        {"path": "/dev/fixed", "type": "c", "major": 7, "minor": 9, "uid": 5}
    ]
    assert result["linux"]["intelRdt"] == {"closID": "b", "enableCMT": True}
    assert result["process"]["user"]["additionalGids"] == [44, 105, 7]
    assert len(result["hooks"]["createContainer"]) == 1  # the spec-level hook only


def test_unresolvable_names_fail_before_any_change(registry: Registry) -> None:
    with pytest.raises(InjectionError) as caught:
        inject_devices({}, ["nvidia.com/gpu=9", "nvidia.com/gpu=0", "gpu0"], registry)
    assert str(caught.value) == "unresolvable CDI devices nvidia.com/gpu=9, gpu0"
    assert caught.value.unresolved == ("nvidia.com/gpu=9", "gpu0")


def test_host_lookups(tmp_path: Path, registry: Registry) -> None:
    original = containerd_spec()
    with pytest.raises(InjectionError) as caught:
        inject_devices(original, ["nvidia.com/gpu=0", "nvidia.com/gpu=missing"], registry)
    assert str(caught.value) == (
        'failed to inject devices: failed to stat CDI host device "/dev/missing": '
        "No such file or directory"
    )
    assert original == containerd_spec()
    os.symlink("/dev/null", tmp_path / "link")
    with pytest.raises(InjectionError, match="not a device node"):
        fill_device_node(DeviceNode("/dev/x", str(tmp_path / "link")))
    with pytest.raises(
        InjectionError, match=r'\("/dev/x", "/dev/null"\), host type mismatch \(b, c\)'
    ):
        fill_device_node(DeviceNode("/dev/x", "/dev/null", type="b"))
    os.mkfifo(tmp_path / "fifo")
    fifo = fill_device_node(DeviceNode("/dev/f", str(tmp_path / "fifo")))
    assert (fifo.type, fifo.major, fifo.minor) == ("p", None, None)
    # a declared type with a major is trusted without a lookup; a lone type is checked
    assert fill_device_node(DeviceNode("/dev/x", "/none", "b", 8, 1)).major == 8
    filled = fill_device_node(DeviceNode("/dev/null", None, "c", 0, 99))
    assert (filled.host_path, filled.type, filled.major, filled.minor) == ("/dev/null", "c", 1, 3)


def test_nil_spec(registry: Registry) -> None:
    with pytest.raises(InjectionError, match="nil OCI Spec"):
        inject_devices(None, ["nvidia.com/gpu=0"], registry)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "clean"),
    [("", "."), ("//a//b/", "/a/b"), ("/a/../..", "/"), ("a/./b/..", "a"), ("../x", "../x")],
)
def test_clean_path_is_go_clean(path: str, clean: str) -> None:
    assert clean_path(path) == clean


def test_empty_oci_spec_gets_what_it_needs(registry: Registry) -> None:
    result = inject_devices({}, ["nvidia.com/gpu=1"], registry)
    assert result["process"] == {"env": ["NVIDIA_VISIBLE_DEVICES=void", "GPU=1"]}
    # no uid/gid defaults without a process user
    assert result["linux"]["devices"][0] == {
        "path": "/dev/nvidia1",
        "type": "c",
        "major": 1,
        "minor": 8,
    }
    assert result["mounts"] == [
        {
            "destination": "/usr/bin/nvidia-smi",
            "source": "/host/nvidia-smi",
            "options": ["ro", "bind"],
        },
        {"destination": "/usr/lib/x", "source": "/lib/x", "options": ["ro"]},
    ]


def test_bare_existing_variable_is_replaced_in_place(registry: Registry) -> None:
    # runtime-tools indexes existing entries by their whole text: a bare NAME matches a CDI
    # NAME=value, a NAME=other does not
    spec = {"process": {"env": ["GPU", "NVIDIA_VISIBLE_DEVICES=all"]}}
    result = inject_devices(spec, ["nvidia.com/gpu=0"], registry)
    assert result["process"]["env"] == [
        "GPU=0",
        "NVIDIA_VISIBLE_DEVICES=all",
        "NVIDIA_VISIBLE_DEVICES=void",
    ]
