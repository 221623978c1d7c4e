"""Error injection in the topology reaches pynvml as the matching NVMLError subclass."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pynvml
import pytest
import yaml
from gpu_cdi_fakehost.pytest_plugin import FakeHostFactory
from gpu_cdi_fakehost.topology import TopologyError, topologies_dir


def topology_with_errors(tmp_path: Path, base: str, errors: list[dict[str, Any]]) -> Path:
    """A shipped topology plus `errors`, written as a YAML file."""
    data = yaml.safe_load((topologies_dir() / f"{base}.yaml").read_text())
    data["errors"] = errors
    path = tmp_path / f"{base}-errors.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@contextlib.contextmanager
def initialized() -> Iterator[None]:
    pynvml.nvmlInit()
    try:
        yield
    finally:
        pynvml.nvmlShutdown()


def test_uuid_on_gpu3_is_lost(fake_nvml: FakeHostFactory, tmp_path: Path) -> None:
    rule = {"call": "nvmlDeviceGetUUID", "device": 3, "error": "GPU_IS_LOST"}
    fake_nvml(topology_with_errors(tmp_path, "dgx-a100", [rule]))
    with initialized():
        h3 = pynvml.nvmlDeviceGetHandleByIndex(3)
        with pytest.raises(pynvml.NVMLError_GpuIsLost) as exc:
            pynvml.nvmlDeviceGetUUID(h3)
        assert exc.value.value == pynvml.NVML_ERROR_GPU_IS_LOST
        assert str(exc.value) == "GPU is lost"
        # only that call on only that GPU
        assert pynvml.nvmlDeviceGetName(h3) == "NVIDIA A100-SXM4-40GB"
        uuid2 = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(2))
        assert uuid2 == "GPU-a20482bc-eb05-5765-bb67-be4ade0d50ff"
        with pytest.raises(pynvml.NVMLError_GpuIsLost):  # and every time
            pynvml.nvmlDeviceGetUUID(h3)


@pytest.mark.parametrize(
    ("call", "error", "exc", "invoke"),
    [
        ("nvmlInit", "DRIVER_NOT_LOADED", pynvml.NVMLError_DriverNotLoaded, None),
        ("nvmlInit", "LIB_RM_VERSION_MISMATCH", pynvml.NVMLError_LibRmVersionMismatch, None),
        (
            "nvmlDeviceGetCount_v2",
            "NVML_ERROR_NO_PERMISSION",
            pynvml.NVMLError_NoPermission,
            lambda: pynvml.nvmlDeviceGetCount(),
        ),
        (
            "nvmlSystemGetDriverVersion",
            "UNKNOWN",
            pynvml.NVMLError_Unknown,
            lambda: pynvml.nvmlSystemGetDriverVersion(),
        ),
        (
            "nvmlDeviceGetHandleByIndex",
            "GPU_IS_LOST",
            pynvml.NVMLError_GpuIsLost,
            lambda: pynvml.nvmlDeviceGetHandleByIndex(0),
        ),
        (
            "nvmlDeviceGetMigMode",
            "RESET_REQUIRED",
            pynvml.NVMLError_ResetRequired,
            lambda: pynvml.nvmlDeviceGetMigMode(pynvml.nvmlDeviceGetHandleByIndex(0)),
        ),
        (
            "nvmlDeviceGetMemoryInfo",
            15,
            pynvml.NVMLError_GpuIsLost,
            lambda: pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)),
        ),
    ],
)
def test_error_classes(
    fake_nvml: FakeHostFactory,
    tmp_path: Path,
    call: str,
    error: str | int,
    exc: type[pynvml.NVMLError],
    invoke: Any,
) -> None:
    fake_nvml(topology_with_errors(tmp_path, "dgx-a100", [{"call": call, "error": error}]))
    if invoke is None:
        with pytest.raises(exc):
            pynvml.nvmlInit()
        return
    with initialized(), pytest.raises(exc):
        invoke()


def test_times_then_recovers(fake_nvml: FakeHostFactory, tmp_path: Path) -> None:
    rule = {"call": "nvmlDeviceGetCount", "error": "TIMEOUT", "times": 2}
    fake_nvml(topology_with_errors(tmp_path, "dgx-a100", [rule]))
    with initialized():
        for _ in range(2):
            with pytest.raises(pynvml.NVMLError_Timeout):
                pynvml.nvmlDeviceGetCount()
        assert pynvml.nvmlDeviceGetCount() == 8


def test_init_fails_first_times_then_works(fake_nvml: FakeHostFactory, tmp_path: Path) -> None:
    """A driver that comes up late: the first nvmlInit fails, the retry succeeds."""
    rule = {"call": "nvmlInit", "error": "DRIVER_NOT_LOADED", "times": 1}
    fake_nvml(topology_with_errors(tmp_path, "dgx-a100", [rule]))
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        pynvml.nvmlInit()
    with initialized():
        assert pynvml.nvmlDeviceGetCount() == 8


def test_counted_failures_are_exact_across_threads(
    fake_nvml: FakeHostFactory, tmp_path: Path
) -> None:
    """ctypes drops the GIL, so threads really race in the library; the count still holds."""
    rule = {"call": "nvmlDeviceGetUUID", "error": "GPU_IS_LOST", "times": 300}
    fake_nvml(topology_with_errors(tmp_path, "dgx-a100", [rule]))

    def worker(index: int) -> int:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        lost = 0
        for _ in range(200):
            try:
                pynvml.nvmlDeviceGetUUID(h)
            except pynvml.NVMLError_GpuIsLost:
                lost += 1
        return lost

    with initialized(), ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(worker, range(8))) == 300


def test_mig_device_target(fake_nvml: FakeHostFactory, tmp_path: Path) -> None:
    """'1:2' fails MIG device 2 of GPU 1, both its lookup and calls on it; nothing else."""
    rules = [
        {"call": "nvmlDeviceGetMigDeviceHandleByIndex", "device": "1:2", "error": "NOT_FOUND"},
        {"call": "*", "device": "0:1", "error": "GPU_IS_LOST"},
    ]
    fake_nvml(topology_with_errors(tmp_path, "dgx-a100-mig", rules))
    with initialized():
        g0, g1 = (pynvml.nvmlDeviceGetHandleByIndex(i) for i in (0, 1))
        pynvml.nvmlDeviceGetMigDeviceHandleByIndex(g1, 1)
        with pytest.raises(pynvml.NVMLError_NotFound):
            pynvml.nvmlDeviceGetMigDeviceHandleByIndex(g1, 2)
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            pynvml.nvmlDeviceGetMigDeviceHandleByIndex(g0, 1)
        m00 = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(g0, 0)
        assert pynvml.nvmlDeviceGetGpuInstanceId(m00) == 1
        assert pynvml.nvmlDeviceGetUUID(g0).startswith("GPU-")


def test_errors_argument_of_the_fixture(fake_nvml: FakeHostFactory) -> None:
    rule = {"call": "nvmlDeviceGetMinorNumber", "device": 5, "error": "GPU_IS_LOST"}
    host = fake_nvml("dgx-h100", errors=[rule])
    assert host.topology.errors[-1].gpu == 5
    with initialized():
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            pynvml.nvmlDeviceGetMinorNumber(pynvml.nvmlDeviceGetHandleByIndex(5))
        assert pynvml.nvmlDeviceGetMinorNumber(pynvml.nvmlDeviceGetHandleByIndex(4)) == 4


def test_errors_argument_is_validated(fakehost: FakeHostFactory) -> None:
    with pytest.raises(TopologyError, match=r"errors: errors\[0\]\.device: no GPU 8"):
        fakehost("dgx-a100", errors=[{"call": "*", "device": 8, "error": "GPU_IS_LOST"}])


def test_whole_gpu_lost_includes_its_mig_devices(
    fake_nvml: FakeHostFactory, tmp_path: Path
) -> None:
    rule = {"call": "*", "device": 1, "error": "GPU_IS_LOST"}
    fake_nvml(topology_with_errors(tmp_path, "dgx-a100-mig", [rule]))
    with initialized():
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            pynvml.nvmlDeviceGetHandleByIndex(1)
        pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(0))
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            pynvml.nvmlDeviceGetHandleByUUID("MIG-b29df42d-dfb9-5180-a1e0-499dad4b8874")


def test_no_topology_env_is_driver_not_loaded(
    fake_nvml: FakeHostFactory, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    fake_nvml("dgx-a100")
    monkeypatch.delenv("FAKE_NVML_TOPOLOGY")
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        pynvml.nvmlInit()
    assert "FAKE_NVML_TOPOLOGY is not set" in capfd.readouterr().err


def test_malformed_file_is_unknown_with_reason(
    fake_nvml: FakeHostFactory, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    host = fake_nvml("dgx-a100")
    bad = host.root / "bad.txt"
    good = host.nvml_topology_file.read_text().splitlines()
    bad.write_text("\n".join([*good[:3], "gpu\tindex=0\tname=x"]) + "\n")
    monkeypatch.setenv("FAKE_NVML_TOPOLOGY", str(bad))
    with pytest.raises(pynvml.NVMLError_Unknown):
        pynvml.nvmlInit()
    assert f"{bad}:4: missing field 'uuid'" in capfd.readouterr().err


def test_topology_file_that_is_a_fifo_does_not_hang(
    fake_nvml: FakeHostFactory, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    host = fake_nvml("dgx-a100")
    fifo = host.root / "topology.fifo"
    os.mkfifo(fifo)
    monkeypatch.setenv("FAKE_NVML_TOPOLOGY", str(fifo))
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        pynvml.nvmlInit()
    assert (
        f"cannot open FAKE_NVML_TOPOLOGY file {fifo}: not a regular file" in capfd.readouterr().err
    )
