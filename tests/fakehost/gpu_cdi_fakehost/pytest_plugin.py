"""pytest fixtures: build fake hosts in tmp_path and point the fake NVML at them.

Registered in tests/conftest.py (`pytest_plugins`). Fixtures:

- `fakehost(topology="dgx-a100", **build_host kwargs) -> FakeHost`: builds a host under a fresh
  directory of tmp_path. Skips (fails in CI) when gcc or nvml.h is missing.
- `fake_nvml(topology="dgx-a100", **kwargs) -> FakeHost`: the same, then sets
  FAKE_NVML_TOPOLOGY for this test and preloads the host's libnvidia-ml.so.<version> by absolute
  path, so pynvml's dlopen("libnvidia-ml.so.1") in this process resolves to the fake library.
- `nvml_init(topology="dgx-a100", **kwargs) -> FakeHost`: fake_nvml, then pynvml.nvmlInit(),
  balanced by nvmlShutdown when the test ends.
"""

from __future__ import annotations

import ctypes
import itertools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpu_cdi_fakehost import compile as cc
from gpu_cdi_fakehost.builder import FakeHost, build_host
from gpu_cdi_fakehost.topology import Topology

FakeHostFactory = Callable[..., FakeHost]

# Libraries loaded into this process; keeps them referenced for the process lifetime.
_preloaded: list[ctypes.CDLL] = []


def require_toolchain() -> None:
    """Skip (or fail under GPU_CDI_REQUIRE_ALL=1) unless the fake NVML can be compiled."""
    from tests.require import need

    need(shutil.which("gcc") is not None, "needs gcc to build the fake libnvidia-ml.so.1")
    try:
        cc.find_nvml_header()
    except cc.BuildError as e:
        need(False, str(e))


@pytest.fixture
def fakehost(tmp_path: Path) -> FakeHostFactory:
    """Factory building fake hosts under tmp_path."""
    require_toolchain()
    counter = itertools.count()

    def make(topology: Topology | str | Path = "dgx-a100", **kwargs: Any) -> FakeHost:
        root = tmp_path / f"host{next(counter)}"
        return build_host(topology, root, **kwargs)

    return make


def preload_nvml(host: FakeHost) -> None:
    """dlopen the host's fake NVML by absolute path (idempotent per process: same SONAME)."""
    _preloaded.append(ctypes.CDLL(str(host.nvml_library)))


@pytest.fixture
def fake_nvml(fakehost: FakeHostFactory, monkeypatch: pytest.MonkeyPatch) -> FakeHostFactory:
    """Factory: build a host and make in-process pynvml serve its topology."""

    def make(topology: Topology | str | Path = "dgx-a100", **kwargs: Any) -> FakeHost:
        host = fakehost(topology, **kwargs)
        for k, v in host.env.items():
            monkeypatch.setenv(k, v)
        preload_nvml(host)
        return host

    return make


@pytest.fixture
def nvml_init(fake_nvml: FakeHostFactory) -> Iterator[FakeHostFactory]:
    """Factory: fake_nvml, then nvmlInit; every init is balanced by nvmlShutdown at teardown."""
    import pynvml

    inits = 0

    def make(topology: Topology | str | Path = "dgx-a100", **kwargs: Any) -> FakeHost:
        nonlocal inits
        host = fake_nvml(topology, **kwargs)
        pynvml.nvmlInit()
        inits += 1
        return host

    yield make
    for _ in range(inits):
        pynvml.nvmlShutdown()
