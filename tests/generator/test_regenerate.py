"""In-process regeneration (`cdi.nvidia.generate.regenerate`), as the device plugin and the NRI
plugin call it: the same spec as `gpu-cdi generate`, written only when it changed, one-line
errors and nothing written on failure."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cdi.nvidia.build import Options
from cdi.nvidia.generate import GenerateError, regenerate
from cdi.nvidia.roots import Roots
from tests.generator.hosts import Hosts, gpu_cdi, host_args


def _roots(host: Any) -> Roots:
    return Roots(str(host.driver_root), str(host.dev_root), proc_sys_root=str(host.proc_sys_root))


@pytest.fixture
def host(hosts: Hosts, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The fake dgx-a100-mig host, its fake NVML set up for this process."""
    host = hosts.get("dgx-a100-mig")
    for key, value in host.env.items():
        monkeypatch.setenv(key, value)
    return host


def test_same_spec_as_the_command(host: Any, tmp_path: Path) -> None:
    hook = "/opt/gpu-cdi/bin/gpu-cdi-hook"  # the command's default depends on PATH
    command = gpu_cdi(["generate", *host_args(host), "--hook-path", hook], host)
    assert command.returncode == 0, command.stderr
    options = Options(hook_path=hook)
    generated = regenerate(_roots(host), options)
    assert generated.text == command.stdout
    assert generated.notes == () and generated.written is False
    (advice,) = generated.advice
    assert f"note: {advice.removeprefix('note: ')}" == command.stderr.strip()

    path = tmp_path / "cdi" / "nvidia.yaml"
    assert regenerate(_roots(host), options, str(path)).written is True
    assert path.read_text() == command.stdout
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert regenerate(_roots(host), options, str(path)).written is False

    old = regenerate(_roots(host), options, str(path), version="0.5.0")
    assert old.written is True and "additionalGids" not in path.read_text()
    assert any("has no additionalGids" in line for line in old.advice)


def test_errors_are_one_line_and_write_nothing(host: Any, tmp_path: Path) -> None:
    with pytest.raises(GenerateError, match=r"libnvidia-ml\.so\.1 was not found") as caught:
        regenerate(Roots(driver_root=str(tmp_path)), Options())
    assert "\n" not in str(caught.value)
    with pytest.raises(GenerateError, match=r"must end in \.yaml or \.json"):
        regenerate(_roots(host), Options(), str(tmp_path / "nvidia.yml"))
    with pytest.raises(GenerateError, match="no such GPU or MIG device"):
        regenerate(_roots(host), Options(device_ids=("99",)), str(tmp_path / "a.yaml"))
    with pytest.raises(GenerateError, match="invalid hook path"):
        regenerate(_roots(host), Options(hook_path="rel/hook"), str(tmp_path / "b.yaml"))
    assert os.listdir(tmp_path) == []
