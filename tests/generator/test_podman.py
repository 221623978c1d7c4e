"""podman as a CDI consumer of `gpu-cdi generate` specs, hooks and all (issues 8, 12).

podman 4.3 (Debian bookworm's) loads specs up to cdiVersion 0.5.0 and rejects nvidia-ctk's
default 0.7.0; podman 5.4 (trixie's) takes the default spec, additionalGids included. Both
run with private storage and the specs alone in their spec dirs (tests/e2e/podman.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.generator.consumers import SHOW, assert_gpu_0


def test_podman_takes_cdi_version_0_5_0(podman: Any, consumer_specs: dict[str, Path]) -> None:
    run = podman.run([consumer_specs["0.5.0"]], ["nvidia.com/gpu=0"], SHOW)
    assert run.returncode == 0, run.stderr
    assert_gpu_0(run.stdout)
    assert "groups=" not in run.stdout  # no additionalGids at 0.5.0


def test_the_default_spec_needs_podman_5(podman: Any, consumer_specs: dict[str, Path]) -> None:
    run = podman.run([consumer_specs["default"]], ["nvidia.com/gpu=0"], SHOW)
    if podman.release.version == "4.3":
        # its CDI library stops at 0.5.0 and skips the file: the name does not resolve
        assert run.returncode != 0
        assert "unresolvable CDI devices nvidia.com/gpu=0" in run.stderr
        return
    assert run.returncode == 0, run.stderr
    assert_gpu_0(run.stdout)
    # 0.7.0 additionalGids: the groups of /dev/dri/card1 and renderD128 on the fake host
    assert "groups=44,105" in run.stdout


@pytest.mark.podman_versions("5.4")
def test_podman_5_all_gpus_with_the_default_spec(
    podman: Any, consumer_specs: dict[str, Path]
) -> None:
    run = podman.run([consumer_specs["default"]], ["nvidia.com/gpu=all"], SHOW)
    assert run.returncode == 0, run.stderr
    words = run.stdout.split()
    assert {f"nvidia{i}" for i in range(8)} <= set(words)
    assert {"nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset", "nvidiactl"} <= set(words)
    assert "libcuda.so -> libcuda.so.1" in run.stdout
    assert "podman version 5.4" in podman.version()
