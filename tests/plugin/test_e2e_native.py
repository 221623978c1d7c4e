"""End to end on containerd 2.1: native mode for every request form, and resolve vs native
giving the same container; auto mode only where containerd will resolve the names.

A private containerd 2.1 per module whose `cdi_spec_dirs` is the plugin's spec dir holds the
`gpu-cdi generate` spec of a fake 8-GPU host. Each request form runs once with the plugin in
auto mode (which must pick native here) and once in resolve mode; the two OCI specs containerd
built and what the containers saw must agree, apart from what resolve mode cannot deliver
(`additionalGids`, docs/nri-plugin.md).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cri import CriError
from tests.plugin.e2e_support import (
    LIBDIR,
    attached,
    build_fake_host,
    comparable,
    device_paths,
    env_values,
    generate_spec,
)

pytestmark = [pytest.mark.e2e, pytest.mark.containerd_versions("2.1")]

SHOW = (
    f"ls /dev /dev/dri /dev/dri/by-path; for f in {LIBDIR}/libcuda.so {LIBDIR}/libcuda.so.1; "
    "do readlink $f; done; echo NVD=$NVIDIA_VISIBLE_DEVICES; id"
)
# form id -> (pod annotations, container annotations, env, GPU indices the container gets)
FORMS: dict[str, tuple[dict[str, str], dict[str, str], dict[str, str], list[int]]] = {
    "env-index": ({}, {}, {"NVIDIA_VISIBLE_DEVICES": "3"}, [3]),
    "env-list": ({}, {}, {"NVIDIA_VISIBLE_DEVICES": "1, 5"}, [1, 5]),
    "env-all": ({}, {}, {"NVIDIA_VISIBLE_DEVICES": "all"}, list(range(8))),
    "env-qualified": ({}, {}, {"NVIDIA_VISIBLE_DEVICES": "nvidia.com/gpu=2"}, [2]),
    "cdi-annotation": ({}, {"cdi.k8s.io/gpus": "nvidia.com/gpu=0,nvidia.com/gpu=4"}, {}, [0, 4]),
    "nri-container": ({"cdi-devices.nri.io/container.c": "- nvidia.com/gpu=1\n- nvidia.com/gpu=3"}, {}, {}, [1, 3]),  # noqa: E501
    "nri-pod": ({"cdi-devices.nri.io/pod": "[nvidia.com/gpu=4]"}, {}, {}, [4]),
    "nri-bare": ({"cdi-devices.nri.io": "- nvidia.com/gpu=6"}, {}, {}, [6]),
    "noderesource": ({"cdi-devices.noderesource.dev/container.c": "- nvidia.com/gpu=7"}, {}, {}, [7]),  # noqa: E501
    "nvidia-container": ({"nvidia.cdi.k8s.io/container.c": "nvidia.com/gpu=7,nvidia.com/gpu=0"}, {}, {}, [7, 0]),  # noqa: E501
    "nvidia-pod": ({"nvidia.cdi.k8s.io/pod": "nvidia.com/gpu=2"}, {}, {}, [2]),
    "nvidia-bare": ({"nvidia.cdi.k8s.io": "nvidia.com/gpu=5"}, {}, {"NVIDIA_VISIBLE_DEVICES": "all"}, [5]),  # noqa: E501
}  # fmt: skip
MODES = ("auto", "resolve")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The fake 8-GPU host (driver files, device nodes made with mknod)."""
    return build_fake_host(tmp_path_factory, "native-host")


@pytest.fixture(scope="module")
def ctd(containerd_version: str, host: Any) -> Iterator[Any]:
    """A private containerd whose only CDI spec dir holds the fake host's spec."""
    from tests.e2e.fixtures import require_containerd
    from tests.e2e.harness import running_containerd

    require_containerd(containerd_version)
    with running_containerd(version=containerd_version) as ctd:
        generate_spec(host, ctd.cdi_dir / "nvidia.yaml")
        yield ctd


@pytest.fixture(scope="module")
def runs(ctd: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """mode -> form -> the container's Run (spec, logs), plus mode -> "log": plugin log.

    Both modes run their container of a form in the same pod, one after the other, so the
    specs differ only by what the plugin did.
    """
    out: dict[str, dict[str, Any]] = {}
    work = tmp_path_factory.mktemp("native-runs")
    with ctd.cri() as cri:
        pods = {form: cri.run_pod(form, annotations=FORMS[form][0]) for form in FORMS}
        for mode in MODES:
            done: dict[str, Any] = {}
            extra = ["--mode", mode]
            with attached(ctd, [ctd.cdi_dir], work / f"{mode}.log", extra=extra) as plugin:
                for form, (_, ctr_ann, env, _) in FORMS.items():
                    run = cri.run(pods[form], "c", ["sh", "-c", SHOW], env=env, annotations=ctr_ann)
                    cri.log_path(run.container_id).unlink()  # the next "c" logs there too
                    cri.remove_container(run.container_id)
                    done[form] = run
                done["log"] = plugin.log()
            out[mode] = done
    return out


def gpu_indices(spec: dict[str, Any]) -> list[int]:
    return [int(p[len("/dev/nvidia") :]) for p in device_paths(spec) if p[11:].isdigit()]


def test_auto_picks_native_where_containerd_resolves_our_names(
    runs: dict[str, dict[str, Any]],
) -> None:
    log = runs["auto"]["log"]
    assert "msg=configured" in log and "mode=native" in log
    assert "resolves CDI names handed over NRI (enable_cdi = true in" in log
    injected = [line for line in log.splitlines() if "msg=injected" in line]
    assert injected and all("mode=native" in line for line in injected)
    assert "mode=resolve" in runs["resolve"]["log"]


@pytest.mark.parametrize("form", FORMS)
def test_native_and_resolve_give_the_same_container(
    runs: dict[str, dict[str, Any]], form: str, reference: Any
) -> None:
    native, resolved = runs["auto"][form], runs["resolve"][form]
    want = FORMS[form][3]
    for run in (native, resolved):
        assert run.exit_code == 0, run.logs
        assert sorted(gpu_indices(run.spec)) == sorted(want)
        assert {f"nvidia{i}" for i in want} <= set(run.logs.split())
        assert "NVD=void" in run.logs
    drop = ["NVIDIA_VISIBLE_DEVICES"]
    assert comparable(reference.normalize(native.spec), drop) == comparable(
        reference.normalize(resolved.spec), drop
    )
    # what the containers saw: the same device nodes and library links (the hooks ran) ...
    seen = [line for line in native.logs.splitlines() if not line.startswith("uid=")]
    assert seen == [line for line in resolved.logs.splitlines() if not line.startswith("uid=")]
    assert "libcuda.so.1" in seen and "libcuda.so.550.163.01" in seen
    # ... but only native mode delivers the spec's additionalGids (no NRI field for them)
    (native_id,) = [ln for ln in native.logs.splitlines() if ln.startswith("uid=")]
    native_gids = set(native.spec["process"]["user"].get("additionalGids") or ())
    resolved_gids = set(resolved.spec["process"]["user"].get("additionalGids") or ())
    if form == "cdi-annotation":  # containerd injected that one itself in both runs
        assert native_gids == resolved_gids
    else:
        assert native_gids > resolved_gids, "native mode: containerd applies additionalGids"
    assert all(f"{gid}" in native_id for gid in native_gids)


def test_auto_resolves_when_containerd_cdi_is_off_and_native_fails_naming_the_setting(
    containerd_factory: Any, host: Any, tmp_path: Path
) -> None:
    ctd = containerd_factory(enable_cdi=False)
    generate_spec(host, ctd.cdi_dir / "nvidia.yaml")
    env = {"NVIDIA_VISIBLE_DEVICES": "0"}
    with attached(ctd, [ctd.cdi_dir], tmp_path / "auto.log") as plugin, ctd.cri() as cri:
        run = cri.run(cri.run_pod("auto"), "c", ["sh", "-c", SHOW], env=env)
        assert run.exit_code == 0 and "nvidia0" in run.logs.split()
        assert "mode=resolve" in plugin.log()
        assert "has its CDI support off (enable_cdi = false in" in plugin.log()
    extra = ["--mode", "native"]
    with (
        attached(ctd, [ctd.cdi_dir], tmp_path / "native.log", extra=extra),
        ctd.cri() as cri,
        pytest.raises(CriError) as caught,
    ):
        cri.create_container(cri.run_pod("native"), "c", command=["true"], env=env)
    details = caught.value.details
    assert "gpu-cdi: pod default/native container c: mode native, but containerd 2.1" in details
    setting = (
        f'(enable_cdi = false in [plugins."io.containerd.cri.v1.runtime"] of {ctd.config_path})'
    )
    assert setting in details
    assert details.endswith("set enable_cdi = true there, or set mode: resolve for the plugin")


def test_preinstalled_plugin_finds_containerds_config_and_goes_native(
    containerd_factory: Any, host: Any
) -> None:
    ctd = containerd_factory(start=False)
    generate_spec(host, ctd.cdi_dir / "nvidia.yaml")
    argv = [sys.executable, "-m", "nri_plugin.cli", "--spec-dir", str(ctd.cdi_dir)]
    ctd.install_plugin_command("40", "gpu-cdi", argv)
    ctd.start()
    with ctd.cri() as cri:
        run = cri.run(
            cri.run_pod("pre"), "c", ["sh", "-c", SHOW], env={"NVIDIA_VISIBLE_DEVICES": "6"}
        )
    assert run.exit_code == 0 and "nvidia6" in run.logs.split()
    assert env_values(run.spec, "NVIDIA_VISIBLE_DEVICES")[-1] == "void"
    log = ctd.plugin_log("gpu-cdi").read_text()
    # containerd launched us: its --config was found through the socket's peer (our parent)
    assert f"of {ctd.config_path}" in log and "mode=native" in log
