"""GPU models and their MIG profiles, so topologies name a model instead of repeating its data.

Numbers follow what the driver reports for these boards (profile ids, slice counts, engine counts);
memory sizes are close to, not exactly, the real values. The values are the NVML constants from
nvml.h; tests/test_fakehost checks these tables against the header.
"""

from __future__ import annotations

import attrs

MIB = 1024 * 1024

# nvmlReturn_t values (nvml.h, enum nvmlReturn_enum)
NVML_ERRORS: dict[str, int] = {
    "SUCCESS": 0,
    "UNINITIALIZED": 1,
    "INVALID_ARGUMENT": 2,
    "NOT_SUPPORTED": 3,
    "NO_PERMISSION": 4,
    "ALREADY_INITIALIZED": 5,
    "NOT_FOUND": 6,
    "INSUFFICIENT_SIZE": 7,
    "INSUFFICIENT_POWER": 8,
    "DRIVER_NOT_LOADED": 9,
    "TIMEOUT": 10,
    "IRQ_ISSUE": 11,
    "LIBRARY_NOT_FOUND": 12,
    "FUNCTION_NOT_FOUND": 13,
    "CORRUPTED_INFOROM": 14,
    "GPU_IS_LOST": 15,
    "RESET_REQUIRED": 16,
    "OPERATING_SYSTEM": 17,
    "LIB_RM_VERSION_MISMATCH": 18,
    "IN_USE": 19,
    "MEMORY": 20,
    "NO_DATA": 21,
    "VGPU_ECC_NOT_SUPPORTED": 22,
    "INSUFFICIENT_RESOURCES": 23,
    "FREQ_NOT_SUPPORTED": 24,
    "ARGUMENT_VERSION_MISMATCH": 25,
    "DEPRECATED": 26,
    "NOT_READY": 27,
    "GPU_NOT_FOUND": 28,
    "INVALID_STATE": 29,
    "UNKNOWN": 999,
}

# nvmlDeviceArchitecture_t values (nvml.h, NVML_DEVICE_ARCH_*)
ARCHITECTURES: dict[str, int] = {
    "kepler": 2,
    "maxwell": 3,
    "pascal": 4,
    "volta": 5,
    "turing": 6,
    "ampere": 7,
    "ada": 8,
    "hopper": 9,
    "blackwell": 10,
}

# nvmlGpuTopologyLevel_t (NVML_TOPOLOGY_*), nearest first
TOPOLOGY_LEVELS: dict[str, int] = {
    "INTERNAL": 0,
    "SINGLE": 10,
    "MULTIPLE": 20,
    "HOSTBRIDGE": 30,
    "NODE": 40,
    "SYSTEM": 50,
}

# nvmlGpuP2PStatus_t (NVML_P2P_STATUS_*)
P2P_STATUS: dict[str, int] = {
    "OK": 0,
    "CHIPSET_NOT_SUPPORTED": 1,
    "GPU_NOT_SUPPORTED": 2,
    "IOH_TOPOLOGY_NOT_SUPPORTED": 3,
    "DISABLED_BY_REGKEY": 4,
    "NOT_SUPPORTED": 5,
}

# nvmlGpuP2PCapsIndex_t (NVML_P2P_CAPS_INDEX_*), in index order
P2P_CAPS: tuple[str, ...] = ("READ", "WRITE", "NVLINK", "ATOMICS", "PCI")

# nvmlIntNvLinkDeviceType_t (NVML_NVLINK_DEVICE_TYPE_*)
NVLINK_DEVICE_TYPES: dict[str, int] = {"GPU": 0, "SWITCH": 2}

# nvmlNvlinkVersion_t (NVML_NVLINK_VERSION_*) of each architecture's NVLink
NVLINK_VERSIONS: dict[str, int] = {
    "pascal": 1,  # 1.0
    "volta": 2,  # 2.0
    "turing": 3,  # 2.2
    "ampere": 4,  # 3.0
    "hopper": 6,  # 4.0
    "blackwell": 7,  # 5.0
}

# PCI device id (device << 16 | vendor) of the NVSwitch generation that goes with each
# architecture, as NVML reports it for the far end of a GPU's link to a switch
NVSWITCH_PCI_DEVICE_IDS: dict[str, int] = {"ampere": 0x1AF110DE, "hopper": 0x22A310DE}

# GPU instance and compute instance ids of one GPU, as the driver's nvidia-caps minors table
# (/proc/driver/nvidia-caps/mig-minors) numbers them: gi0..gi14, ci0..ci7
MIG_GPU_INSTANCE_IDS = 15
MIG_COMPUTE_INSTANCE_IDS = 8

# NVML_GPU_INSTANCE_PROFILE_* indexes, used as the `profile` argument of
# nvmlDeviceGetGpuInstanceProfileInfo
PROFILE_INDEXES: dict[str, int] = {
    "1_SLICE": 0,
    "2_SLICE": 1,
    "3_SLICE": 2,
    "4_SLICE": 3,
    "7_SLICE": 4,
    "8_SLICE": 5,
    "6_SLICE": 6,
    "1_SLICE_REV1": 7,
    "2_SLICE_REV1": 8,
    "1_SLICE_REV2": 9,
}


@attrs.frozen
class GiProfile:
    """One GPU instance profile as nvmlDeviceGetGpuInstanceProfileInfoV reports it."""

    name: str  # e.g. "3g.20gb"; NVML's profile name is "MIG " + name
    index: int  # NVML_GPU_INSTANCE_PROFILE_*
    id: int
    slices: int  # compute slices
    memory_slices: int  # placement size
    instances: int
    multiprocessors: int
    copy_engines: int
    decoders: int
    encoders: int
    jpegs: int
    ofas: int
    memory_mib: int
    p2p: bool = False


@attrs.frozen
class Model:
    """A GPU board: what NVML reports for it unless a topology overrides a field."""

    key: str
    name: str
    architecture: str
    compute_capability: tuple[int, int]
    memory_total_mib: int
    memory_reserved_mib: int
    pci_device_id: int
    pci_subsystem_id: int
    max_mig_devices: int = 0
    memory_slices: int = 0
    mig_profiles: tuple[GiProfile, ...] = ()
    ecc: bool = False  # ECC on (data-center boards): NVML then reports ECC error events
    nvlinks: int = 0  # NVLink links of the board (0: none)

    @property
    def mig_capable(self) -> bool:
        """True when the board supports MIG at all."""
        return self.max_mig_devices > 0


def _p(
    name: str,
    index: str,
    pid: int,
    slices: int,
    mslices: int,
    inst: int,
    sms: int,
    engines: tuple[int, int, int, int, int],
    mem: int,
) -> GiProfile:
    ce, dec, enc, jpeg, ofa = engines
    return GiProfile(
        name, PROFILE_INDEXES[index], pid, slices, mslices, inst, sms, ce, dec, enc, jpeg, ofa, mem
    )


_A100_40GB_PROFILES = (
    _p("1g.5gb", "1_SLICE", 19, 1, 1, 7, 14, (1, 0, 0, 0, 0), 4864),
    _p("1g.5gb+me", "1_SLICE_REV1", 20, 1, 1, 1, 14, (1, 1, 0, 1, 1), 4864),
    _p("1g.10gb", "1_SLICE_REV2", 15, 1, 2, 4, 14, (1, 1, 0, 0, 0), 9856),
    _p("2g.10gb", "2_SLICE", 14, 2, 2, 3, 28, (2, 1, 0, 0, 0), 9856),
    _p("3g.20gb", "3_SLICE", 9, 3, 4, 2, 42, (3, 2, 0, 0, 0), 19968),
    _p("4g.20gb", "4_SLICE", 5, 4, 4, 1, 56, (4, 2, 0, 0, 0), 19968),
    _p("7g.40gb", "7_SLICE", 0, 7, 8, 1, 98, (7, 5, 0, 1, 1), 40192),
)

_A100_80GB_PROFILES = (
    _p("1g.10gb", "1_SLICE", 19, 1, 1, 7, 14, (1, 0, 0, 0, 0), 9728),
    _p("1g.10gb+me", "1_SLICE_REV1", 20, 1, 1, 1, 14, (1, 1, 0, 1, 1), 9728),
    _p("1g.20gb", "1_SLICE_REV2", 15, 1, 2, 4, 14, (1, 1, 0, 0, 0), 19968),
    _p("2g.20gb", "2_SLICE", 14, 2, 2, 3, 28, (2, 1, 0, 0, 0), 19968),
    _p("3g.40gb", "3_SLICE", 9, 3, 4, 2, 42, (3, 2, 0, 0, 0), 40192),
    _p("4g.40gb", "4_SLICE", 5, 4, 4, 1, 56, (4, 2, 0, 0, 0), 40192),
    _p("7g.80gb", "7_SLICE", 0, 7, 8, 1, 98, (7, 5, 0, 1, 1), 80384),
)

_H100_80GB_PROFILES = (
    _p("1g.10gb", "1_SLICE", 19, 1, 1, 7, 16, (1, 1, 0, 1, 0), 10240),
    _p("1g.10gb+me", "1_SLICE_REV1", 20, 1, 1, 1, 16, (1, 1, 0, 1, 1), 10240),
    _p("1g.20gb", "1_SLICE_REV2", 15, 1, 2, 4, 16, (1, 1, 0, 1, 0), 20480),
    _p("2g.20gb", "2_SLICE", 14, 2, 2, 3, 32, (2, 2, 0, 2, 0), 20480),
    _p("3g.40gb", "3_SLICE", 9, 3, 4, 2, 60, (3, 3, 0, 3, 0), 40448),
    _p("4g.40gb", "4_SLICE", 5, 4, 4, 1, 64, (4, 4, 0, 4, 0), 40448),
    _p("7g.80gb", "7_SLICE", 0, 7, 8, 1, 132, (8, 7, 0, 7, 1), 80896),
)

MODELS: dict[str, Model] = {
    m.key: m
    for m in (
        Model(
            "A100-SXM4-40GB", "NVIDIA A100-SXM4-40GB", "ampere", (8, 0), 40960, 581,
            0x20B010DE, 0x134F10DE, 7, 8, _A100_40GB_PROFILES, ecc=True, nvlinks=12,
        ),
        Model(
            "A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB", "ampere", (8, 0), 81920, 581,
            0x20B210DE, 0x147F10DE, 7, 8, _A100_80GB_PROFILES, ecc=True, nvlinks=12,
        ),
        Model(
            "A100-PCIE-80GB", "NVIDIA A100 80GB PCIe", "ampere", (8, 0), 81920, 581,
            0x20B510DE, 0x153310DE, 7, 8, _A100_80GB_PROFILES, ecc=True, nvlinks=12,
        ),
        Model(
            "H100-SXM5-80GB", "NVIDIA H100 80GB HBM3", "hopper", (9, 0), 81559, 579,
            0x233010DE, 0x16C110DE, 7, 8, _H100_80GB_PROFILES, ecc=True, nvlinks=18,
        ),
        Model(
            "RTX-A6000", "NVIDIA RTX A6000", "ampere", (8, 6), 49140, 410,
            0x223010DE, 0x145910DE, nvlinks=4,
        ),
        Model(
            "L4", "NVIDIA L4", "ada", (8, 9), 23034, 329, 0x27B810DE, 0x16CA10DE, ecc=True,
        ),
    )
}  # fmt: skip
