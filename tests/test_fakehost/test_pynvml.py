"""The real pynvml, through the fake libnvidia-ml.so.1, reports exactly each shipped topology."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pynvml
import pytest
from gpu_cdi_fakehost.builder import FakeHost
from gpu_cdi_fakehost.pytest_plugin import FakeHostFactory
from gpu_cdi_fakehost.topology import load_topology, shipped_topologies

from tests.test_fakehost.nvmlview import expect, observe

SHIPPED = ["dgx-a100", "dgx-a100-mig", "dgx-h100", "workstation", "scale-64", "pcie-nvlink-pairs"]


@contextlib.contextmanager
def session(fake_nvml: FakeHostFactory, name: str) -> Iterator[FakeHost]:
    """Build `name`, nvmlInit against it, always balanced by nvmlShutdown."""
    host = fake_nvml(name)
    pynvml.nvmlInit()
    try:
        yield host
    finally:
        pynvml.nvmlShutdown()


def test_all_required_topologies_ship() -> None:
    assert set(SHIPPED) <= set(shipped_topologies())


@pytest.mark.parametrize("name", SHIPPED)
def test_pynvml_reports_the_topology(fake_nvml: FakeHostFactory, name: str) -> None:
    host = fake_nvml(name)
    pynvml.nvmlInit()
    try:
        seen = observe()
    finally:
        pynvml.nvmlShutdown()
    assert seen == expect(host.topology)


def test_reference_mig_layout(fake_nvml: FakeHostFactory) -> None:
    """Spot-check against the reference spec: index -> MIG UUID, GI/CI ids (nvidia-ctk.md s1)."""
    with session(fake_nvml, "dgx-a100-mig"):
        seen = {
            f"{g}:{m['index']}": (m["uuid"], m["gi"], m["ci"], m["name"])
            for g, gpu in enumerate(observe()["gpus"])
            for m in gpu["mig_devices"]
        }
    a100 = "NVIDIA A100-SXM4-40GB MIG"
    assert seen == {
        "0:0": ("MIG-c3a39de5-8dae-504a-ac91-63da6e04b5db", 1, 0, f"{a100} 3g.20gb"),
        "0:1": ("MIG-69fa9a52-6160-55ba-8aca-d335c38f7341", 5, 0, f"{a100} 2g.10gb"),
        "0:2": ("MIG-192ad627-cfd9-5801-965a-ba2adda5748f", 13, 0, f"{a100} 1g.5gb"),
        "0:3": ("MIG-db658ab0-5585-5b6a-8b05-eb8c39249447", 14, 0, f"{a100} 1g.5gb"),
        "1:0": ("MIG-b29df42d-dfb9-5180-a1e0-499dad4b8874", 1, 0, f"{a100} 3g.20gb"),
        "1:1": ("MIG-31a4a1cd-0cfc-5ece-b02a-210dbd3f3c0d", 2, 0, f"{a100} 1c.3g.20gb"),
        "1:2": ("MIG-0a1e4104-7360-54ec-adf6-ad31cb384e04", 2, 1, f"{a100} 2c.3g.20gb"),
    }


def test_scale_host_counts(fake_nvml: FakeHostFactory) -> None:
    with session(fake_nvml, "scale-64"):
        gpus = observe()["gpus"]
        assert len(gpus) == 64
        assert sum(len(g["mig_devices"]) for g in gpus) == 448


def test_profiles_without_mig_enabled(fake_nvml: FakeHostFactory) -> None:
    """v1 profile info works on a MIG-capable GPU with MIG off; the V query needs MIG on."""
    with session(fake_nvml, "dgx-a100"):
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(
            h, pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE, 1
        )
        assert (info.id, info.sliceCount, info.memorySizeMB) == (9, 3, 19968)
        with pytest.raises(pynvml.NVMLError_NotSupported):
            pynvml.nvmlDeviceGetGpuInstanceProfileInfo(h, pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE)
        with pytest.raises(pynvml.NVMLError_NotFound):
            pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)


def test_non_mig_gpu(fake_nvml: FakeHostFactory) -> None:
    with session(fake_nvml, "workstation"):
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        with pytest.raises(pynvml.NVMLError_NotSupported):
            pynvml.nvmlDeviceGetMigMode(h)
        assert pynvml.nvmlDeviceGetMaxMigDeviceCount(h) == 0
        with pytest.raises(pynvml.NVMLError_NotSupported):
            pynvml.nvmlDeviceGetGpuInstanceProfileInfo(h, 0, 1)


def test_mig_handle_rules(fake_nvml: FakeHostFactory) -> None:
    """Full-GPU-only and MIG-only queries fail the way NVML documents."""
    with session(fake_nvml, "dgx-a100-mig"):
        gpu = pynvml.nvmlDeviceGetHandleByIndex(0)
        mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 0)
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            pynvml.nvmlDeviceGetGpuInstanceId(gpu)
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(gpu)
        with pytest.raises(pynvml.NVMLError_NotSupported):
            pynvml.nvmlDeviceGetMinorNumber(mig)
        with pytest.raises(pynvml.NVMLError_NotSupported):
            pynvml.nvmlDeviceGetMigMode(mig)
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 7)  # max is 7
        with pytest.raises(pynvml.NVMLError_NotFound):
            pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 4)  # GPU0 has 4
        with pytest.raises(pynvml.NVMLError_NotFound):
            pynvml.nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000")
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            pynvml.nvmlDeviceGetHandleByIndex(8)
        # The same struct under both pending and current: a pending change is visible.
        assert pynvml.nvmlDeviceGetMigMode(pynvml.nvmlDeviceGetHandleByIndex(2)) == [0, 0]
        assert pynvml.nvmlDeviceGetPciInfo(mig).busId == pynvml.nvmlDeviceGetPciInfo(gpu).busId


def test_unimplemented_entry_point_is_function_not_found(fake_nvml: FakeHostFactory) -> None:
    with session(fake_nvml, "dgx-a100"), pytest.raises(pynvml.NVMLError_FunctionNotFound):
        pynvml.nvmlDeviceGetPowerUsage(pynvml.nvmlDeviceGetHandleByIndex(0))


def test_error_string(fake_nvml: FakeHostFactory) -> None:
    with session(fake_nvml, "dgx-a100"):
        assert pynvml.nvmlErrorString(pynvml.NVML_ERROR_GPU_IS_LOST) == "GPU is lost"
        assert str(pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)) == "Not Found"


def test_uninitialized(fake_nvml: FakeHostFactory) -> None:
    fake_nvml("dgx-a100")
    # no nvmlInit: the library answers UNINITIALIZED itself
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        pynvml.nvmlDeviceGetCount()


_CHILD = """
import json, pynvml
pynvml.nvmlInit()
h = pynvml.nvmlDeviceGetHandleByIndex(0)
print(json.dumps([pynvml.nvmlSystemGetDriverVersion(), pynvml.nvmlDeviceGetCount(),
                  pynvml.nvmlDeviceGetUUID(h)]))
"""


def test_library_found_by_soname_in_driver_root(fakehost: FakeHostFactory) -> None:
    """A fresh process finds the host's libnvidia-ml.so.1 through the dynamic loader, unaided."""
    host = fakehost("workstation", driver_version="535.104.05")
    env = {**os.environ, **host.env, "LD_LIBRARY_PATH": str(host.lib_dir)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == ["535.104.05", 1, host.topology.gpus[0].uuid]


def test_topology_switch_after_shutdown(fake_nvml: FakeHostFactory) -> None:
    """The file is re-read at the next first init, so one process can move between hosts."""
    fake_nvml("dgx-a100")
    pynvml.nvmlInit()
    assert pynvml.nvmlDeviceGetCount() == 8
    pynvml.nvmlShutdown()
    fake_nvml("workstation")
    pynvml.nvmlInit()
    try:
        assert pynvml.nvmlDeviceGetCount() == 1
        assert pynvml.nvmlSystemGetDriverVersion() == load_topology("workstation").driver_version
    finally:
        pynvml.nvmlShutdown()
