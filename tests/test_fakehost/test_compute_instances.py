"""Compute instances and MIG device attributes: what NVIDIA's go-nvlib (nvidia-ctk, the device
plugin) asks to name a MIG device's profile, answered through pynvml.

`go_nvlib_profile` follows go-nvlib's MigDevice.GetProfile and NewMigProfile step by step, so a
MIG device it names right here is named right by nvidia-ctk on the same fake host (checked by
bench/nvidia_ctk_parity.py, which runs the real binary).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest
import yaml
from gpu_cdi_fakehost.pytest_plugin import FakeHostFactory
from gpu_cdi_fakehost.topology import topologies_dir

GI_PROFILE_SLICES = {0: 1, 7: 1, 9: 1, 1: 2, 8: 2, 2: 3, 3: 4, 6: 6, 4: 7, 5: 8}
MEDIA_EXTENSIONS = {7, 8}  # GPU_INSTANCE_PROFILE_1_SLICE_REV1, 2_SLICE_REV1
CI_PROFILE_SLICES = {0: 1, 7: 1, 1: 2, 2: 3, 3: 4, 6: 6, 4: 7, 5: 8}
GI_PROFILE_COUNT, CI_PROFILE_COUNT = 0x12, 0x9


def go_nvlib_profile(mig: Any) -> str:
    """The profile name go-nvlib gives a MIG device, from what NVML reports."""
    parent = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
    total = pynvml.nvmlDeviceGetMemoryInfo(parent).total
    attributes = pynvml.nvmlDeviceGetAttributes(mig)
    gi = pynvml.nvmlDeviceGetGpuInstanceById(parent, pynvml.nvmlDeviceGetGpuInstanceId(mig))
    ci = pynvml.nvmlGpuInstanceGetComputeInstanceById(
        gi, pynvml.nvmlDeviceGetComputeInstanceId(mig)
    )
    gi_info = pynvml.nvmlGpuInstanceGetInfo(gi)
    ci_info = pynvml.nvmlComputeInstanceGetInfo(ci)
    for i in range(GI_PROFILE_COUNT):
        try:
            gi_profile = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(parent, i, version=1)
        except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
            continue
        if gi_profile.id != gi_info.profileId:
            continue
        for j in range(CI_PROFILE_COUNT):
            try:
                ci_profile = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, j, 0, 1)
            except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument):
                continue
            if ci_profile.id != ci_info.profileId:
                continue
            fraction = math.ceil(attributes.memorySizeMB * 2**20 / total * 8) / 8
            gb = round(fraction * ((total + 2**30 - 1) // 2**30))
            c, g = CI_PROFILE_SLICES[j], GI_PROFILE_SLICES[i]
            suffix = "+me" if i in MEDIA_EXTENSIONS else ""
            return f"{g}g.{gb}gb{suffix}" if c == g else f"{c}c.{g}g.{gb}gb{suffix}"
    raise AssertionError("no matching profile IDs found")


def mig_handles() -> Iterator[tuple[int, int, Any]]:
    for g in range(pynvml.nvmlDeviceGetCount()):
        gpu = pynvml.nvmlDeviceGetHandleByIndex(g)
        for m in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(gpu)):
            try:
                yield g, m, pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, m)
            except pynvml.NVMLError_NotFound:
                break


def profile_names(topo: Any) -> dict[tuple[int, int], str]:
    """What the topology says each MIG device is (its name after 'MIG ')."""
    return {(m.gpu, m.index): m.name.split(" MIG ")[1] for m in topo.mig_devices}


@pytest.mark.parametrize("name", ["dgx-a100-mig", "scale-64"])
def test_go_nvlib_names_every_mig_device(nvml_init: FakeHostFactory, name: str) -> None:
    host = nvml_init(name)
    seen = {(g, m): go_nvlib_profile(h) for g, m, h in mig_handles()}
    assert seen == profile_names(host.topology)


def test_80gb_board_with_split_compute(nvml_init: FakeHostFactory, tmp_path: Path) -> None:
    """Compute instances smaller than their GPU instance, and the +me profile, on an 80GB A100."""
    data = yaml.safe_load((topologies_dir() / "dgx-a100.yaml").read_text())
    data["name"] = "a100-80gb-split"
    data["gpus"] = data["gpus"][:1]
    data["gpus"][0].update(
        model="A100-SXM4-80GB",
        mig={
            "mode": "enabled",
            "gpu_instances": [
                {"id": 1, "profile": "4g.40gb", "placement": {"start": 0},
                 "compute_instances": [{"id": 0, "slices": 1}, {"id": 1, "slices": 3}]},
                {"id": 2, "profile": "2g.20gb", "placement": {"start": 4}},
                {"id": 3, "profile": "1g.10gb+me", "placement": {"start": 6}},
            ],
        },
    )  # fmt: skip
    path = tmp_path / "split.yaml"
    path.write_text(yaml.safe_dump(data))
    host = nvml_init(path)
    seen = {(g, m): go_nvlib_profile(h) for g, m, h in mig_handles()}
    assert seen == {(0, 0): "1c.4g.40gb", (0, 1): "3c.4g.40gb", (0, 2): "2g.20gb",
                    (0, 3): "1g.10gb+me"}  # fmt: skip
    assert seen == profile_names(host.topology)


def test_attributes_and_compute_instance_profiles(nvml_init: FakeHostFactory) -> None:
    nvml_init("dgx-a100-mig")
    gpu1 = pynvml.nvmlDeviceGetHandleByIndex(1)
    mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu1, 2)  # GI 2 (3g.20gb), CI 1 (2 slices)
    a = pynvml.nvmlDeviceGetAttributes(mig)
    assert (a.multiprocessorCount, a.gpuInstanceSliceCount, a.computeInstanceSliceCount) == (
        28, 3, 2,
    )  # fmt: skip
    assert (a.sharedCopyEngineCount, a.sharedDecoderCount, a.memorySizeMB) == (3, 2, 19968)
    with pytest.raises(pynvml.NVMLError_NotSupported):  # MIG device handles only
        pynvml.nvmlDeviceGetAttributes(gpu1)
    gi = pynvml.nvmlDeviceGetGpuInstanceById(gpu1, 2)
    profiles = {}
    for j in range(CI_PROFILE_COUNT):
        try:
            p = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, j, 0)
        except pynvml.NVMLError_NotSupported:
            continue
        profiles[j] = (p.id, p.sliceCount, p.instanceCount, p.multiprocessorCount, p.name)
    assert profiles == {
        0: (0, 1, 3, 14, "MIG 1c.3g.20gb"),
        1: (1, 2, 1, 28, "MIG 2c.3g.20gb"),
        2: (2, 3, 1, 42, "MIG 3g.20gb"),
    }
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, CI_PROFILE_COUNT, 0)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, 0, 1)  # one engine profile
    info = pynvml.nvmlComputeInstanceGetInfo(pynvml.nvmlGpuInstanceGetComputeInstanceById(gi, 1))
    assert (info.id, info.profileId, info.placement.start, info.placement.size) == (1, 1, 1, 2)
    with pytest.raises(pynvml.NVMLError_NotFound):
        pynvml.nvmlGpuInstanceGetComputeInstanceById(gi, 2)


def test_error_rules_reach_compute_instance_calls(nvml_init: FakeHostFactory) -> None:
    rule = {"call": "nvmlDeviceGetAttributes", "device": "0:1", "error": "GPU_IS_LOST"}
    nvml_init("dgx-a100-mig", errors=[rule])
    gpu0 = pynvml.nvmlDeviceGetHandleByIndex(0)
    pynvml.nvmlDeviceGetAttributes(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu0, 0))
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlDeviceGetAttributes(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu0, 1))
