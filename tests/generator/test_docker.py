"""Docker 28 as a CDI consumer: `docker run --device nvidia.com/gpu=...` with the spec
`gpu-cdi generate` writes by default, hooks included (issue 12). A private dockerd from Debian
sid reads the spec from its own --cdi-spec-dir (tests/e2e/docker.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.generator.consumers import SHOW, assert_gpu_0


@pytest.fixture(scope="module")
def spec(docker: Any, consumer_specs: dict[str, Any]) -> Iterator[None]:
    """The default spec in the daemon's CDI dir for this module."""
    target = docker.cdi_dir / "gpu-cdi-test-docker.yaml"
    target.write_bytes(consumer_specs["default"].read_bytes())
    yield
    target.unlink()


def test_docker_one_gpu_with_the_default_spec(docker: Any, spec: None) -> None:
    run = docker.run(["nvidia.com/gpu=0"], SHOW)
    assert run.returncode == 0, run.stderr
    assert_gpu_0(run.stdout)
    # Docker 28.5 applies the spec's additionalGids, then replaces them with the user's groups
    # (fixed upstream in moby#52579); --group-add is the workaround for non-root users.
    assert "groups=0(root)\n" in run.stdout
    added = docker.run(["nvidia.com/gpu=0"], "id", args=["--group-add", "44", "--group-add", "105"])
    assert "groups=0(root),44,105" in added.stdout, added.stderr


def test_docker_all_gpus_with_the_default_spec(docker: Any, spec: None) -> None:
    run = docker.run(["nvidia.com/gpu=all"], SHOW + "; echo NVD=$NVIDIA_VISIBLE_DEVICES")
    assert run.returncode == 0, run.stderr
    words = set(run.stdout.split())
    assert {f"nvidia{i}" for i in range(8)} | {"nvidia-uvm", "nvidiactl"} <= words
    assert "libcuda.so -> libcuda.so.1" in run.stdout  # the hooks ran
    assert "NVD=void" in words


def test_docker_names_an_unknown_device(docker: Any, spec: None) -> None:
    run = docker.run(["nvidia.com/gpu=9"], "true")
    assert run.returncode != 0
    assert "unresolvable CDI devices nvidia.com/gpu=9" in run.stderr
    assert "28." in docker.docker("version", "--format", "{{.Server.Version}}").stdout
