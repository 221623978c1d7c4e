"""The plugin on fake hosts (the fake libnvidia-ml.so.1 under the real pynvml): the same flags as
`gpu-cdi generate`, the spec it writes in process, node labels, a host without a driver."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.device_plugin.kubelet import FakeKubelet
from tests.device_plugin.support import INVENTORIES, PROJECT, Plugin, run
from tests.require import need_root

HOOK = str(Path(sys.executable).parent / "gpu-cdi-hook")


@pytest.fixture
def host(fakehost: Callable[..., Any]) -> Any:
    need_root()  # device nodes are made with mknod
    return fakehost("dgx-a100-mig")


def host_args(host: Any) -> list[str]:
    return list(host.generate_argv[2:])  # --driver-root, --dev-root, --host-root


def test_generate_command_line_works_with_the_program_swapped(host: Any) -> None:
    line = host.command_line().replace("gpu-cdi generate", "gpu-cdi-device-plugin --list")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", "-c", line + " --mig-strategy mixed"],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    saved = run(
        ["--list", "--inventory", str(INVENTORIES / "dgx-a100-mig.yaml"), "--mig-strategy", "mixed"]
    )
    live, stored = rows(proc.stdout), rows(saved.stdout)
    # the live host is the saved inventory's host; only NVML and sysfs know the NUMA nodes
    assert [r[:3] + r[4:] for r in live] == [r[:3] + r[4:] for r in stored]
    assert {r[3] for r in live[1:]} == {"0", "1"} and {r[3] for r in stored[1:]} == {"-"}
    assert proc.stdout.count("nvidia.com/mig-") == 7


def rows(table: str) -> list[list[str]]:
    return [line.split() for line in table.splitlines()]


def test_writes_the_spec_generate_writes_and_node_labels(host: Any, tmp_path: Path) -> None:
    generated = tmp_path / "generated.yaml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cdi",
            "generate",
            *host_args(host),
            "--hook-path",
            HOOK,
            "--output",
            str(generated),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **host.env},
        cwd=PROJECT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    spec, labels = tmp_path / "nvidia.yaml", tmp_path / "gpu-cdi.features"
    args = [*host_args(host), "--nvidia-cdi-hook-path", HOOK, "--mig-strategy", "mixed"]
    args += ["--cdi-spec-file", str(spec), "--nfd-features-file", str(labels)]
    with FakeKubelet(tmp_path / "kubelet") as kubelet:
        args += ["--kubelet-socket", str(kubelet.socket)]
        with Plugin(args, tmp_path / "plugin.log", env=host.env) as plugin:
            kubelet.wait_for(lambda: len(kubelet.registrations) == 6, what="6 resources")
            plugin.wait_log("node labels written")
    assert spec.read_text() == generated.read_text()
    assert f"{spec}: written" in plugin.log()
    lines = labels.read_text().splitlines()
    assert lines[0].startswith("# ")
    assert dict(line.split("=", 1) for line in lines[1:]) == {
        "nvidia.com/cuda.driver-version.full": "550.163.01",
        "nvidia.com/cuda.driver-version.major": "550",
        "nvidia.com/cuda.driver-version.minor": "163",
        "nvidia.com/cuda.driver-version.revision": "01",
        "nvidia.com/cuda.runtime-version.full": "12.4",
        "nvidia.com/cuda.runtime-version.major": "12",
        "nvidia.com/cuda.runtime-version.minor": "4",
        "nvidia.com/gpu.compute.major": "8",
        "nvidia.com/gpu.compute.minor": "0",
        "nvidia.com/gpu.count": "8",
        "nvidia.com/gpu.family": "ampere",
        "nvidia.com/gpu.memory": "40960",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
        "nvidia.com/mig-1c.3g.20gb.count": "1",
        "nvidia.com/mig-1g.5gb.count": "2",
        "nvidia.com/mig-2c.3g.20gb.count": "1",
        "nvidia.com/mig-2g.10gb.count": "1",
        "nvidia.com/mig-3g.20gb.count": "2",
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.strategy": "mixed",
    }


def test_a_second_start_leaves_the_files_alone(host: Any, tmp_path: Path) -> None:
    spec = tmp_path / "nvidia.yaml"
    (tmp_path / "kubelet").mkdir()
    args = [*host_args(host), "--nvidia-cdi-hook-path", HOOK, "--cdi-spec-file", str(spec)]
    args += ["--kubelet-socket", str(tmp_path / "kubelet" / "kubelet.sock")]  # no kubelet
    for attempt in range(2):
        with Plugin(args, tmp_path / f"plugin{attempt}.log", env=host.env) as plugin:
            plugin.wait_log("offering nvidia.com/gpu x6")
    assert f"{spec}: unchanged, not rewritten" in plugin.log()


def test_no_driver_is_one_line_then_exit_or_wait(tmp_path: Path) -> None:
    empty = tmp_path / "root"
    empty.mkdir()
    proc = run(["--driver-root", str(empty), "--kubelet-socket", ""])
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert "libnvidia-ml.so.1 was not found under the driver root" in line
    args = ["--driver-root", str(empty), "--fail-on-init-error=false", "--kubelet-socket", ""]
    with Plugin(args, tmp_path / "wait.log") as plugin:
        plugin.wait_log("waiting (--fail-on-init-error=false)")
        assert plugin.stop() == 0
    assert plugin.log().count("not found under the driver root") == 1
    assert "Traceback" not in plugin.log()


def test_nvml_failing_at_start(fakehost: Callable[..., Any], tmp_path: Path) -> None:
    need_root()
    host = fakehost("workstation", errors=[{"call": "nvmlInit", "error": "DRIVER_NOT_LOADED"}])
    proc = run([*host_args(host), "--list"], env=host.env)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "failed to initialise" in proc.stderr, proc.stderr


def test_kubelet_directory_missing_is_awaited(tmp_path: Path) -> None:
    kubelet = FakeKubelet(tmp_path / "not-yet")
    args = [
        "--inventory",
        str(INVENTORIES / "dgx-a100.yaml"),
        "--kubelet-socket",
        str(kubelet.socket),
    ]
    with Plugin(args, tmp_path / "plugin.log") as plugin:
        plugin.wait_log("is not a directory; retrying")
        plugin.wait_log("waiting for kubelet")
        with kubelet:
            kubelet.wait_for(lambda: kubelet.registered("nvidia.com/gpu"), what="registration")
    assert plugin.log().count("is not a directory") == 1
    assert "Traceback" not in plugin.log()


def test_the_node_mounted_at_a_host_root(host: Any) -> None:
    # what the DaemonSet does: the node's / at /host, every other root as the node sees it
    mounted = run(
        ["--list", "--host-root", str(host.root), "--mig-strategy", "mixed"], env=host.env
    )
    direct = run([*host_args(host), "--list", "--mig-strategy", "mixed"], env=host.env)
    assert mounted.returncode == 0, mounted.stderr
    assert mounted.stdout == direct.stdout
    assert {r[3] for r in rows(mounted.stdout)[1:]} == {"0", "1"}  # sysfs under the mount
