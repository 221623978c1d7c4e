"""The plugin's CreateContainer handling, called the way the NRI stub calls it (real registry
over spec files, real protobuf messages)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from cdi.registry import Registry
from nri_plugin.config import Config
from nri_plugin.metrics import Metrics
from nri_plugin.plugin import GpuCdiPlugin, is_privileged
from nri_plugin.policy import Policy
from nri_plugin.protocol import Code, RpcError, api
from nri_plugin.runtime_cdi import RuntimeProbe
from tests.plugin.specs import GPU_SPEC, MGMT_SPEC, write_specs


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    return write_specs(tmp_path / "cdi", gpu=GPU_SPEC, mgmt=MGMT_SPEC)


@pytest.fixture
def registry(spec_dir: Path) -> Iterator[Registry]:
    with Registry([str(spec_dir)]) as reg:
        yield reg


def make(registry: Registry, **policy: object) -> GpuCdiPlugin:
    config = Config(spec_dirs=registry.spec_dirs, policy=attrs.evolve(Policy(), **policy))
    return GpuCdiPlugin(config, registry, Metrics(enabled=True))


def pod(namespace: str = "default", **annotations: str) -> api.PodSandbox:
    return api.PodSandbox(id="p1", name="pod1", namespace=namespace, annotations=annotations)


def ctr(
    name: str = "c0", env: tuple[str, ...] = (), privileged: bool = False, **annotations: str
) -> api.Container:
    container = api.Container(id="c1", name=name, env=["PATH=/bin", *env], annotations=annotations)
    if privileged:
        container.linux.resources.devices.add(allow=True, access="rwm")
    else:
        container.linux.resources.devices.add(allow=False, access="rwm")
    return container


def run(plugin: GpuCdiPlugin, p: api.PodSandbox, c: api.Container) -> api.ContainerAdjustment:
    response = asyncio.run(plugin.create_container(p, c))
    return None if response is None else response.adjust


def devices(adj: api.ContainerAdjustment) -> list[str]:
    return [d.path for d in adj.linux.devices]


def env(adj: api.ContainerAdjustment) -> dict[str, str]:
    return {e.key: e.value for e in adj.env}


def test_container_without_request_gets_no_adjustment(registry: Registry) -> None:
    assert run(make(registry), pod(), ctr()) is None


def test_nvidia_visible_devices_resolves_spec_and_device_edits(registry: Registry) -> None:
    adj = run(make(registry), pod(), ctr(env=("NVIDIA_VISIBLE_DEVICES=0",)))
    assert devices(adj) == ["/dev/nvidiactl", "/dev/nvidia0", "/dev/dri/renderD128"]
    assert env(adj) == {"NVIDIA_VISIBLE_DEVICES": "void", "DRIVER": "1"}
    assert [m.destination for m in adj.mounts] == ["/usr/lib/libcuda.so.1"]
    assert [list(h.args)[1] for h in adj.hooks.create_container] == [
        "update-ldcache",
        "create-symlinks",
    ]
    assert len(adj.CDI_devices) == 0


@pytest.mark.parametrize(
    ("pod_annotations", "ctr_annotations"),
    [
        ({}, {"cdi.k8s.io/gpu": "nvidia.com/gpu=1"}),
        ({"cdi-devices.nri.io/container.c0": "- nvidia.com/gpu=1"}, {}),
        ({"cdi-devices.nri.io/pod": "[nvidia.com/gpu=1]"}, {}),
        ({"nvidia.cdi.k8s.io": "nvidia.com/gpu=1"}, {}),
        (
            {
                "nvidia.cdi.k8s.io/container.other": "nvidia.com/gpu=0",
                "nvidia.cdi.k8s.io/pod": "nvidia.com/gpu=1",
            },
            {},
        ),
    ],
)
def test_each_annotation_convention(
    registry: Registry, pod_annotations: dict[str, str], ctr_annotations: dict[str, str]
) -> None:
    adj = run(make(registry), pod(**pod_annotations), ctr(**ctr_annotations))
    assert devices(adj) == ["/dev/nvidiactl", "/dev/nvidia1"]


def test_all_plus_a_gpu_does_not_double_hooks_or_devices(registry: Registry) -> None:
    adj = run(
        make(registry),
        pod(nvidia_cdi="x"),
        ctr(**{"cdi.k8s.io/a": "nvidia.com/gpu=all,nvidia.com/gpu=0"}),
    )
    assert sorted(devices(adj)) == sorted(
        ["/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia1", "/dev/dri/renderD128"]
    )
    assert len(adj.hooks.create_container) == 2


def fail(plugin: GpuCdiPlugin, p: api.PodSandbox, c: api.Container) -> RpcError:
    with pytest.raises(RpcError) as caught:
        run(plugin, p, c)
    return caught.value


def test_unknown_device_names_pod_container_source_and_device(registry: Registry) -> None:
    error = fail(make(registry), pod(**{"nvidia.cdi.k8s.io/pod": "nvidia.com/gpu=7"}), ctr())
    assert error.code == Code.NOT_FOUND
    assert error.message.startswith(
        'gpu-cdi: pod default/pod1 container c0: pod annotation "nvidia.cdi.k8s.io/pod" '
        'requests unknown CDI device "nvidia.com/gpu=7"'
    )
    assert "known nvidia.com/gpu devices: 0, 1, all" in error.message


def test_unknown_env_device(registry: Registry) -> None:
    error = fail(make(registry), pod(), ctr(env=("NVIDIA_VISIBLE_DEVICES=GPU-nope",)))
    assert "env NVIDIA_VISIBLE_DEVICES requests unknown CDI device" in error.message
    assert '"nvidia.com/gpu=GPU-nope"' in error.message


def test_malformed_annotation_fails_only_that_container(registry: Registry) -> None:
    plugin = make(registry)
    error = fail(plugin, pod(**{"cdi-devices.nri.io": "nvidia.com/gpu=0"}), ctr())
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == (
        'gpu-cdi: pod default/pod1 container c0: pod annotation "cdi-devices.nri.io": '
        "expected a YAML list of CDI device names, got a str"
    )
    assert devices(run(plugin, pod(), ctr(env=("NVIDIA_VISIBLE_DEVICES=1",))))
    assert b'gpu_cdi_nri_errors_total{reason="request"} 1.0' in plugin.metrics.render()


def test_namespace_policy(registry: Registry) -> None:
    plugin = make(registry, annotation_namespaces=frozenset({"ml"}))
    request = {"nvidia.cdi.k8s.io/pod": "nvidia.com/gpu=0"}
    assert devices(run(plugin, pod("ml", **request), ctr()))
    error = fail(plugin, pod("web", **request), ctr())
    assert error.code == Code.PERMISSION_DENIED
    assert 'namespace "web" may not request devices by annotation' in error.message
    assert "pod web/pod1 container c0" in error.message
    # the env var is not an annotation
    assert devices(run(plugin, pod("web"), ctr(env=("NVIDIA_VISIBLE_DEVICES=0",))))


def test_management_kind_needs_an_allowed_namespace(registry: Registry) -> None:
    request = {"nvidia.cdi.k8s.io/pod": "management.nvidia.com/gpu=all"}
    error = fail(make(registry), pod("default", **request), ctr())
    assert "a management device" in error.message
    plugin = make(registry, management_namespaces=frozenset({"gpu-operator"}))
    assert devices(run(plugin, pod("gpu-operator", **request), ctr())) == ["/dev/nvidiactl"]


def test_env_of_unprivileged_containers_can_be_ignored(registry: Registry) -> None:
    plugin = make(registry, env_unprivileged=False)
    visible = ("NVIDIA_VISIBLE_DEVICES=0",)
    assert run(plugin, pod(), ctr(env=visible)) is None
    assert devices(run(plugin, pod(), ctr(env=visible, privileged=True)))


def test_privileged_detection() -> None:
    assert is_privileged(ctr(privileged=True))
    assert not is_privileged(ctr())
    specific = ctr()
    specific.linux.resources.devices.add(allow=True, type="c", access="rw").major.value = 195
    assert not is_privileged(specific)


def test_devices_the_runtime_already_injected_are_left_alone(registry: Registry) -> None:
    plugin = make(registry)
    c = ctr(**{"cdi.k8s.io/gpu": "nvidia.com/gpu=0"})
    for path in ("/dev/nvidia0", "/dev/dri/renderD128", "/dev/nvidiactl"):
        c.linux.devices.add(path=path, type="c")
    # the nodes alone are no evidence: a privileged container has every host node
    assert devices(run(plugin, pod(), c))
    c.hooks.create_container.add(
        path="/usr/bin/gpu-cdi-hook",
        args=["gpu-cdi-hook", "create-symlinks", "--link", "../card1::/dev/dri/by-path/a"],
    )
    assert env(run(plugin, pod(), c)) == {"NVIDIA_VISIBLE_DEVICES": "void"}
    assert len(run(plugin, pod(), c).linux.devices) == 0
    # the same evidence does not stop other conventions (containerd does not handle them)
    p = pod(**{"nvidia.cdi.k8s.io": "nvidia.com/gpu=0"})
    assert devices(run(plugin, p, ctr()))
    assert devices(run(make(registry, runtime_cdi="inject"), pod(), c))
    skip = make(registry, runtime_cdi="skip")
    left = run(skip, pod(), ctr(**{"cdi.k8s.io/g": "nvidia.com/gpu=0"}))
    assert env(left) == {"NVIDIA_VISIBLE_DEVICES": "void"} and not left.linux.devices


def test_a_refreshed_registry_is_used_at_once(registry: Registry, spec_dir: Path) -> None:
    plugin = make(registry)
    c = ctr(env=("NVIDIA_VISIBLE_DEVICES=1",))
    assert devices(run(plugin, pod(), c)) == ["/dev/nvidiactl", "/dev/nvidia1"]
    (spec_dir / "gpu.yaml").write_text(GPU_SPEC.replace("minor: 1}", "minor: 9}"))
    registry.refresh()
    (_, node) = run(plugin, pod(), c).linux.devices
    assert node.minor == 9


def test_configure_picks_native_and_native_carries_names(
    registry: Registry, tmp_path: Path
) -> None:
    plugin = make(registry)
    # containerd 2.1 with its defaults would not read this test's spec dir: say it does
    ctd_config = tmp_path / "config.toml"
    dirs = ", ".join(f'"{d}"' for d in registry.spec_dirs)
    ctd_config.write_text(
        f'version = 3\n[plugins."io.containerd.cri.v1.runtime"]\ncdi_spec_dirs = [{dirs}]\n'
    )
    plugin.probe = RuntimeProbe(str(ctd_config))
    request = api.ConfigureRequest(runtime_name="containerd", runtime_version="2.1.4")
    asyncio.run(plugin.configure(request))
    assert plugin.mode == "native"
    adj = run(plugin, pod(), ctr(env=("NVIDIA_VISIBLE_DEVICES=0,1",)))
    assert [d.name for d in adj.CDI_devices] == ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]
    assert env(adj) == {"NVIDIA_VISIBLE_DEVICES": "void"}
    assert len(adj.linux.devices) == 0
    # unknown devices are still refused with our message, not the runtime's
    assert fail(plugin, pod(), ctr(env=("NVIDIA_VISIBLE_DEVICES=5",))).code == Code.NOT_FOUND


def test_configure_applies_the_runtimes_drop_in_config(registry: Registry) -> None:
    plugin = make(registry)
    text = "mode: native\nvoid_visible_devices: false\npolicy: {env_unprivileged: false}\n"
    request = api.ConfigureRequest(runtime_name="containerd", runtime_version="1.7.24", config=text)
    asyncio.run(plugin.configure(request))
    assert plugin.mode == "native"
    assert plugin.config.void_visible_devices is False
    assert plugin.config.policy.env_unprivileged is False
    bad = api.ConfigureRequest(runtime_name="containerd", config="socket: /x")
    with pytest.raises(RpcError, match="socket: cannot be set here"):
        asyncio.run(plugin.configure(bad))
