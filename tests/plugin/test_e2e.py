"""End to end: the plugin attached to real containerds (1.7.24 with NRI 0.6.1, and 2.1), specs
written by `gpu-cdi generate` for a fake 8-GPU host, pods asking for GPUs in every supported way.

containerd 1.7.24 drops CDI names handed over NRI, and containerd 2.1 does not read the
plugin's spec dir here, so auto mode resolves on both: what reaches the container is the
plugin's own adjustment (native mode on 2.1: tests/plugin/test_e2e_native.py). Each OCI spec
containerd built is compared with the reference CDI library's injection of the same devices
into the same base spec (tests/conformance), apart from the documented deviations
(e2e_support.comparable).
"""

from __future__ import annotations

import socket
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cri import CriError
from tests.plugin.e2e_support import (
    LIBDIR,
    PluginProcess,
    attached,
    build_fake_host,
    comparable,
    device_paths,
    env_values,
    generate_spec,
    hook_args,
)

pytestmark = pytest.mark.e2e

SHOW = (
    "ls -l /dev/nvidia* /dev/dri; ls -l "
    + LIBDIR
    + "/libcuda.so*; echo NVD=$NVIDIA_VISIBLE_DEVICES"
)
POLICY = """
policy:
  annotation_namespaces: [default, gpu, gpu-operator]
  management_namespaces: [gpu-operator]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The fake 8-GPU host (driver files, device nodes made with mknod)."""
    return build_fake_host(tmp_path_factory, "nri-host")


@pytest.fixture(scope="module")
def spec_dir(host: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin's spec dir: the GPU spec and the management spec of the fake host."""
    directory = tmp_path_factory.mktemp("nri-cdi")
    generate_spec(host, directory / "nvidia.yaml")
    generate_spec(
        host,
        directory / "management.yaml",
        "--mode",
        "management",
        "--vendor",
        "management.nvidia.com",
    )
    return directory


@pytest.fixture(scope="module")
def spec(spec_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((spec_dir / "nvidia.yaml").read_text())
    return data


@pytest.fixture(scope="module")
def plugin(
    containerd: Any, spec_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PluginProcess]:
    """The plugin on the session containerd, with a namespace policy and metrics."""
    work = tmp_path_factory.mktemp("nri-plugin")
    (work / "config.yaml").write_text(POLICY)
    extra = ["--config", str(work / "config.yaml"), "--metrics-port", str(free_port())]
    with attached(containerd, [spec_dir], work / "plugin.log", extra=extra) as proc:
        yield proc


@pytest.fixture
def pod(cri: Any, plugin: PluginProcess) -> str:
    """A pod in namespace default (plugin attached)."""
    pod_id: str = cri.run_pod("gpu-pod")
    return pod_id


def run(cri: Any, pod_id: str, name: str, **kw: Any) -> Any:
    result = cri.run(pod_id, name, ["sh", "-c", SHOW], **kw)
    assert result.exit_code == 0, result.logs
    return result


def base_spec(cri: Any, pod_id: str, name: str, **kw: Any) -> dict[str, Any]:
    """OCI spec of a twin container that requests nothing (the plugin leaves it alone)."""
    cid = cri.create_container(pod_id, name, command=["sh", "-c", SHOW], **kw)
    spec: dict[str, Any] = cri.oci_spec(cid)
    cri.remove_container(cid)
    return spec


def assert_conforms(
    reference: Any, spec_dirs: list[Path], base: Any, ours: Any, names: list[str]
) -> None:
    expected = reference.inject(spec_dirs, base, names)
    drop = ["NVIDIA_VISIBLE_DEVICES"]
    assert comparable(reference.normalize(ours), drop) == comparable(
        reference.normalize(expected), drop
    )
    # the documented deviations themselves: one NVIDIA_VISIBLE_DEVICES, set to void; the
    # process's groups as containerd made them (NRI cannot add groups)
    assert env_values(ours, "NVIDIA_VISIBLE_DEVICES") == ["void"]
    groups = ours["process"]["user"].get("additionalGids")
    assert groups == base["process"]["user"].get("additionalGids")


def gpu_nodes(listing: str) -> set[str]:
    return {word for word in listing.split() if word.startswith("/dev/nvidia")}


# -- requests by env and annotations -------------------------------------------------------


def test_env_one_gpu_matches_the_reference_and_reaches_the_container(
    cri: Any, pod: str, spec_dir: Path, reference: Any
) -> None:
    result = run(cri, pod, "env0", env={"NVIDIA_VISIBLE_DEVICES": "0"})
    assert gpu_nodes(result.logs) == {
        "/dev/nvidia0",
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
        "/dev/nvidia-uvm-tools",
        "/dev/nvidia-modeset",
    }
    assert f"{LIBDIR}/libcuda.so.550.163.01" in result.logs
    assert "libcuda.so.1 -> libcuda.so.550.163.01" in result.logs  # made by the hook
    assert "NVD=void" in result.logs
    assert "crw-rw-rw-" in result.logs and "195,   0" in result.logs
    base = base_spec(cri, pod, "env0-base", env={"NVIDIA_VISIBLE_DEVICES": "void"})
    assert_conforms(reference, [spec_dir], base, result.spec, ["nvidia.com/gpu=0"])


def test_env_all_gpus(cri: Any, pod: str, spec_dir: Path, reference: Any) -> None:
    result = run(cri, pod, "envall", env={"NVIDIA_VISIBLE_DEVICES": "all"})
    assert {f"/dev/nvidia{i}" for i in range(8)} <= gpu_nodes(result.logs)
    base = base_spec(cri, pod, "envall-base", env={"NVIDIA_VISIBLE_DEVICES": "none"})
    assert_conforms(reference, [spec_dir], base, result.spec, ["nvidia.com/gpu=all"])


def test_env_indices_and_uuids(cri: Any, pod: str, spec: dict[str, Any]) -> None:
    by_name = {d["name"]: d["containerEdits"]["deviceNodes"][0]["path"] for d in spec["devices"]}
    uuid = next(name for name in by_name if name.startswith("GPU-"))
    result = run(cri, pod, "envlist", env={"NVIDIA_VISIBLE_DEVICES": f"2, 5,{uuid}"})
    gpus = {p for p in gpu_nodes(result.logs) if p[len("/dev/nvidia") :].isdigit()}
    assert gpus == {"/dev/nvidia2", "/dev/nvidia5", by_name[uuid]}


@pytest.mark.parametrize(
    ("pod_annotations", "devices"),
    [
        ({"cdi-devices.nri.io/container.ann": "- nvidia.com/gpu=1\n- nvidia.com/gpu=3"}, [1, 3]),
        ({"cdi-devices.nri.io/pod": "[nvidia.com/gpu=4]"}, [4]),
        ({"cdi-devices.nri.io": "- nvidia.com/gpu=6"}, [6]),
        ({"nvidia.cdi.k8s.io/container.ann": "nvidia.com/gpu=7,nvidia.com/gpu=0"}, [7, 0]),
        ({"nvidia.cdi.k8s.io/pod": "nvidia.com/gpu=2", "nvidia.cdi.k8s.io": "x"}, [2]),
        ({"nvidia.cdi.k8s.io": "nvidia.com/gpu=5"}, [5]),
    ],
)
def test_pod_annotation_conventions(
    cri: Any, plugin: PluginProcess, pod_annotations: dict[str, str], devices: list[int]
) -> None:
    pod_id = cri.run_pod("ann-pod", annotations=pod_annotations)
    result = run(cri, pod_id, "ann", env={"NVIDIA_VISIBLE_DEVICES": "all"})
    gpus = [p for p in device_paths(result.spec) if p[len("/dev/nvidia") :].isdigit()]
    assert gpus == [f"/dev/nvidia{i}" for i in devices]  # the annotation wins over the env
    assert env_values(result.spec, "NVIDIA_VISIBLE_DEVICES") == ["void"]
    assert {f"/dev/nvidia{i}" for i in devices} <= gpu_nodes(result.logs)


def test_annotations_merge_and_match_the_reference(
    cri: Any, plugin: PluginProcess, spec_dir: Path, reference: Any
) -> None:
    pod_id = cri.run_pod(
        "merge-pod",
        annotations={
            "cdi-devices.nri.io/container.merged": "- nvidia.com/gpu=3",
            "nvidia.cdi.k8s.io/container.merged": "nvidia.com/gpu=1,nvidia.com/gpu=3",
        },
    )
    result = run(cri, pod_id, "merged")
    # container-scoped keys: a twin with another name in the same pod asks for nothing
    base = base_spec(cri, pod_id, "twin")
    assert_conforms(
        reference, [spec_dir], base, result.spec, ["nvidia.com/gpu=3", "nvidia.com/gpu=1"]
    )


def test_container_without_request_is_untouched(cri: Any, pod: str, plugin: PluginProcess) -> None:
    before = len(plugin.log())
    result = run(cri, pod, "plain", env={"NVIDIA_VISIBLE_DEVICES": "void"})
    assert not [p for p in device_paths(result.spec) if "nvidia" in p]
    assert env_values(result.spec, "NVIDIA_VISIBLE_DEVICES") == ["void"]
    assert not result.spec.get("hooks")
    assert "msg=injected" not in plugin.log()[before:]


def test_one_structured_log_line_per_injection(cri: Any, pod: str, plugin: PluginProcess) -> None:
    before = len(plugin.log())
    run(cri, pod, "logged", env={"NVIDIA_VISIBLE_DEVICES": "1"})
    lines = [ln for ln in plugin.log()[before:].splitlines() if "msg=injected" in ln]
    assert len(lines) == 1, lines
    assert "level=info" in lines[0]
    assert "pod=default/gpu-pod container=logged mode=resolve" in lines[0]
    assert 'source="env NVIDIA_VISIBLE_DEVICES" devices="nvidia.com/gpu=1"' in lines[0]


# -- refresh -------------------------------------------------------------------------------


def test_new_and_changed_specs_are_used_without_restarting(
    cri: Any, pod: str, plugin: PluginProcess, host: Any, spec_dir: Path, tmp_path: Path
) -> None:
    request = {"NVIDIA_VISIBLE_DEVICES": "fresh.example.com/gpu=0"}
    with pytest.raises(CriError, match=r'unknown CDI device "fresh\.example\.com/gpu=0"'):
        cri.create_container(pod, "fresh0", command=["true"], env=request)
    # a new spec file appears (written elsewhere, then renamed in, as writers do)
    generate_spec(host, tmp_path / "fresh.yaml", "--vendor", "fresh.example.com")
    data = yaml.safe_load((tmp_path / "fresh.yaml").read_text())
    target = spec_dir / "fresh.yaml"
    try:
        (tmp_path / "fresh.yaml").rename(target)
        result = _retry_run(cri, pod, "fresh1", request)
        assert "/dev/nvidia0" in device_paths(result.spec)
        # the spec changes: device 0 gains an env var
        data["devices"][0]["containerEdits"]["env"] = ["FRESH=changed"]
        tmp = spec_dir / ".fresh.tmp"
        tmp.write_text(yaml.safe_dump(data))
        tmp.rename(target)
        deadline = 50
        for attempt in range(deadline):
            cid = cri.create_container(pod, f"fresh2-{attempt}", command=["true"], env=request)
            spec = cri.oci_spec(cid)
            cri.remove_container(cid)
            if env_values(spec, "FRESH") == ["changed"]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the changed spec was not picked up within 2.5 s")
    finally:
        target.unlink(missing_ok=True)


def _retry_run(cri: Any, pod: str, name: str, env: Mapping[str, str]) -> Any:
    for attempt in range(50):
        try:
            return cri.run(pod, f"{name}-{attempt}", ["true"], env=env)
        except CriError as error:
            if "unknown CDI device" not in error.details:
                raise
            time.sleep(0.05)
    pytest.fail("the new spec was not picked up within 2.5 s")


# -- bad requests and policy ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "pod_annotations", "env", "code", "parts"),
    [
        (
            "default",
            {},
            {"NVIDIA_VISIBLE_DEVICES": "9"},
            "NotFound",
            ["env NVIDIA_VISIBLE_DEVICES", 'unknown CDI device "nvidia.com/gpu=9"'],
        ),
        (
            "default",
            {"cdi-devices.nri.io/container.bad": "nvidia.com/gpu=0"},
            {},
            "InvalidArgument",
            ['pod annotation "cdi-devices.nri.io/container.bad"', "expected a YAML list"],
        ),
        (
            "default",
            {"nvidia.cdi.k8s.io/pod": "nvidia.com/gpu=0,nvidia.com/gpu"},
            {},
            "InvalidArgument",
            ['pod annotation "nvidia.cdi.k8s.io/pod"', 'device "nvidia.com/gpu"'],
        ),
        (
            "untrusted",
            {"nvidia.cdi.k8s.io/pod": "nvidia.com/gpu=0"},
            {},
            "PermissionDenied",
            ['namespace "untrusted" may not request devices by annotation', '"nvidia.com/gpu=0"'],
        ),
        (
            "default",
            {"nvidia.cdi.k8s.io/pod": "management.nvidia.com/gpu=all"},
            {},
            "PermissionDenied",
            ['"management.nvidia.com/gpu=all", a management device', 'namespace "default"'],
        ),
    ],
)
def test_a_bad_request_fails_only_its_container(
    cri: Any,
    plugin: PluginProcess,
    namespace: str,
    pod_annotations: dict[str, str],
    env: dict[str, str],
    code: str,
    parts: list[str],
) -> None:
    pod_id = cri.run_pod("bad-pod", namespace, annotations=pod_annotations)
    with pytest.raises(CriError) as caught:
        cri.create_container(pod_id, "bad", command=["true"], env=env)
    details = caught.value.details
    assert f"code = {code}" in details
    assert f"gpu-cdi: pod {namespace}/bad-pod container bad: " in details
    for part in parts:
        assert part in details
    # the plugin is still there and serves the next container, in the same pod
    assert plugin.proc.poll() is None
    good = run(cri, cri.run_pod("good-pod", namespace), "good", env={"NVIDIA_VISIBLE_DEVICES": "3"})
    assert "/dev/nvidia3" in device_paths(good.spec)


def test_namespace_policy_holds(cri: Any, plugin: PluginProcess) -> None:
    ann = {"nvidia.cdi.k8s.io/pod": "nvidia.com/gpu=0"}
    assert "/dev/nvidia0" in device_paths(
        run(cri, cri.run_pod("p", "gpu", annotations=ann), "a").spec
    )
    # env requests are not annotations: allowed in any namespace
    other = cri.run_pod("p", "untrusted")
    assert "/dev/nvidia1" in device_paths(
        run(cri, other, "e", env={"NVIDIA_VISIBLE_DEVICES": "1"}).spec
    )
    mgmt = {"nvidia.cdi.k8s.io/container.m": "management.nvidia.com/gpu=all"}
    managed = run(cri, cri.run_pod("p", "gpu-operator", annotations=mgmt), "m")
    assert "/dev/nvidiactl" in device_paths(managed.spec)


def test_metrics_and_health(cri: Any, pod: str, plugin: PluginProcess) -> None:
    run(cri, pod, "metered", env={"NVIDIA_VISIBLE_DEVICES": "0,1"})
    port = plugin.flag("--metrics-port")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'gpu_cdi_nri_injections_total{mode="resolve"}' in text
    assert 'gpu_cdi_nri_requests_total{source="NVIDIA_VISIBLE_DEVICES"}' in text
    assert "gpu_cdi_nri_create_container_seconds_bucket" in text


# -- cdi.k8s.io annotations and containerd's own CDI support ------------------------------


def test_cdi_annotations_resolved_by_the_plugin_when_containerd_cdi_is_off(
    containerd_factory: Any, spec_dir: Path, tmp_path: Path, reference: Any
) -> None:
    ctd = containerd_factory(enable_cdi=False)
    extra = ["--config", str(tmp_path / "c.yaml")]
    (tmp_path / "c.yaml").write_text("policy: {env_unprivileged: false}\n")
    with (
        attached(ctd, [spec_dir], tmp_path / "plugin.log", extra=extra) as plugin,
        ctd.cri() as cri,
    ):
        pod_id = cri.run_pod("cdi-pod")
        ann = {"cdi.k8s.io/gpus": "nvidia.com/gpu=4,nvidia.com/gpu=2"}
        result = run(cri, pod_id, "c", annotations=ann)
        assert {"/dev/nvidia4", "/dev/nvidia2"} <= gpu_nodes(result.logs)
        base = base_spec(cri, pod_id, "c-base")
        assert_conforms(
            reference, [spec_dir], base, result.spec, ["nvidia.com/gpu=4", "nvidia.com/gpu=2"]
        )
        # env_unprivileged: false -- the env var counts only for privileged containers
        plain = run(cri, pod_id, "u", env={"NVIDIA_VISIBLE_DEVICES": "1"})
        assert "/dev/nvidia1" not in device_paths(plain.spec)
        priv_pod = cri.run_pod("priv-pod", privileged=True)
        priv = run(cri, priv_pod, "p", env={"NVIDIA_VISIBLE_DEVICES": "1"}, privileged=True)
        assert env_values(priv.spec, "NVIDIA_VISIBLE_DEVICES") == ["void"]
        assert "/dev/nvidia1" in gpu_nodes(priv.logs)
        assert plugin.stop() == 0  # SIGTERM: clean stop
        assert "msg=stopped" in plugin.log()


def test_devices_containerd_injected_itself_are_not_doubled(
    containerd_factory: Any, spec_dir: Path, tmp_path: Path, reference: Any
) -> None:
    ctd = containerd_factory(enable_cdi=True)
    for name in ("nvidia.yaml",):
        (ctd.cdi_dir / name).write_bytes((spec_dir / name).read_bytes())
    with attached(ctd, [ctd.cdi_dir], tmp_path / "plugin.log") as plugin, ctd.cri() as cri:
        pod_id = cri.run_pod("dup-pod")
        ann = {"cdi.k8s.io/gpus": "nvidia.com/gpu=0"}
        result = run(cri, pod_id, "c", annotations=ann)
        base = base_spec(cri, pod_id, "c-base")
        expected = reference.inject([ctd.cdi_dir], base, ["nvidia.com/gpu=0"])
        # containerd's injection, untouched by the plugin: nothing doubled, nothing replaced
        assert hook_args(result.spec) == hook_args(expected)
        assert device_paths(result.spec) == device_paths(expected)
        assert env_values(result.spec, "NVIDIA_VISIBLE_DEVICES") == ["void"]
        assert "left to the runtime's CDI support" in plugin.log()
        assert "msg=injected" not in plugin.log()


def test_preinstalled_plugin_takes_the_runtimes_drop_in_config(
    containerd_factory: Any, spec_dir: Path
) -> None:
    ctd = containerd_factory(start=False, enable_cdi=False)
    argv = [sys.executable, "-m", "nri_plugin.cli", "--spec-dir", str(spec_dir)]
    drop_in = "mode: resolve\npolicy: {annotation_namespaces: [ml]}\n"
    ctd.install_plugin_command("40", "gpu-cdi", argv, config=drop_in)
    ctd.start()
    with ctd.cri() as cri:
        ann = {"nvidia.cdi.k8s.io/pod": "nvidia.com/gpu=6"}
        allowed = run(cri, cri.run_pod("p", "ml", annotations=ann), "c")
        assert "/dev/nvidia6" in gpu_nodes(allowed.logs)
        denied = cri.run_pod("p", "default", annotations=ann)
        with pytest.raises(CriError, match='namespace "default" may not request devices'):
            cri.create_container(denied, "c", command=["true"])
    log = ctd.plugin_log("gpu-cdi").read_text()
    assert "msg=configured runtime=" in log and "mode=resolve" in log


def test_native_mode_where_containerd_cannot_resolve_fails_each_request_naming_the_fix(
    containerd_factory: Any, spec_dir: Path, tmp_path: Path
) -> None:
    # 1.7.24 drops CDI names handed over NRI; 2.1 would not find them: it does not read the
    # plugin's spec dir. Either way the container would start without its GPU, or not at all.
    ctd = containerd_factory(enable_cdi=True)
    what, fix = {
        "1.7": (
            "drops CDI names handed over NRI (needs >= 1.7.30 or >= 2.1.0)",
            "set mode: resolve",
        ),
        "2.1": (
            f"does not read the plugin's spec dir(s) {spec_dir} (cdi_spec_dirs = ",
            "add them to cdi_spec_dirs there, or set mode: resolve",
        ),
    }[ctd.config.version]
    with (
        attached(ctd, [spec_dir], tmp_path / "p.log", extra=["--mode", "native"]) as plugin,
        ctd.cri() as cri,
    ):
        assert "level=error msg=configured" in plugin.log() and what in plugin.log()
        pod_id = cri.run_pod("native")
        for attempt in range(2):
            with pytest.raises(CriError) as caught:
                cri.create_container(pod_id, f"c{attempt}", env={"NVIDIA_VISIBLE_DEVICES": "0"})
            assert "code = FailedPrecondition" in caught.value.details
            assert "gpu-cdi: pod default/native container c" in caught.value.details
            assert what in caught.value.details and fix in caught.value.details
        # containers asking for nothing are not touched
        assert run(cri, pod_id, "plain").exit_code == 0
