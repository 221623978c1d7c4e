"""Topology loading: shipped files, strict validation with precise messages, NVML constants."""

from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from gpu_cdi_fakehost import compile as cc
from gpu_cdi_fakehost.catalog import (
    ARCHITECTURES,
    MODELS,
    NVLINK_DEVICE_TYPES,
    NVLINK_VERSIONS,
    NVML_ERRORS,
    P2P_CAPS,
    P2P_STATUS,
    PROFILE_INDEXES,
    TOPOLOGY_LEVELS,
)
from gpu_cdi_fakehost.nvmlfile import render
from gpu_cdi_fakehost.pytest_plugin import require_toolchain
from gpu_cdi_fakehost.topology import (
    INJECTABLE_CALLS,
    TopologyError,
    load_topology,
    parse_topology,
    topologies_dir,
)

from tests.require import need_tool


def test_shipped_topologies_shape() -> None:
    a100 = load_topology("dgx-a100")
    assert [g.pci.sysfs for g in a100.gpus] == [
        "0000:07:00.0", "0000:0f:00.0", "0000:47:00.0", "0000:4e:00.0",
        "0000:87:00.0", "0000:90:00.0", "0000:b7:00.0", "0000:bd:00.0",
    ]  # fmt: skip
    assert not a100.mig_devices
    mig = load_topology("dgx-a100-mig")
    assert [(g.index, [gi.id for gi in g.gpu_instances]) for g in mig.gpus[:2]] == [
        (0, [1, 5, 13, 14]),
        (1, [1, 2]),
    ]
    assert [ci.id for ci in mig.gpus[1].gpu_instances[1].compute_instances] == [0, 1]
    assert all(not g.mig_mode for g in mig.gpus[2:])
    h100 = load_topology("dgx-h100")
    assert {g.name for g in h100.gpus} == {"NVIDIA H100 80GB HBM3"} and len(h100.gpus) == 8
    ws = load_topology("workstation")
    assert len(ws.gpus) == 1 and not ws.gpus[0].mig_capable
    scale = load_topology("scale-64")
    assert (len(scale.gpus), len(scale.mig_devices)) == (64, 448)


def test_load_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text((topologies_dir() / "workstation.yaml").read_text())
    assert load_topology(path).source == str(path)
    assert load_topology(str(path)).name == "workstation"


def _base() -> dict[str, Any]:
    return {
        "name": "t",
        "driver_version": "550.163.01",
        "cuda_version": "12.4",
        "gpus": [
            {
                "model": "A100-SXM4-40GB",
                "uuid": "GPU-11111111-2222-3333-4444-555555555555",
                "pci_bus_id": "0000:07:00.0",
                "mig": {
                    "mode": "enabled",
                    "gpu_instances": [
                        {"id": 1, "profile": "3g.20gb", "placement": {"start": 4}},
                    ],
                },
            }
        ],
    }


def _with(path: str, value: Any) -> dict[str, Any]:
    """_base() with the value at a dotted path (list index = its length appends) replaced."""
    data = _base()
    *parents, last = path.split(".")
    node: Any = data
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if last.isdigit() and int(last) == len(node):
        node.append(value)
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


GI = "gpus.0.mig.gpu_instances"
UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-11111111-2222-3333-4444-666666666666"
CASES: list[tuple[str, Any, str]] = [
    ("driver_version", "r550", "driver_version: not a driver version: 'r550'"),
    ("cuda_version", "12", "cuda_version: expected MAJOR.MINOR like '12.4', got '12'"),
    ("colour", "red", "unknown field(s): colour"),
    ("gpus.0.model", "A200", "gpus[0].model: unknown model 'A200'"),
    ("gpus.0.uuid", "GPU-xyz", "gpus[0].uuid: expected GPU-<lower-case uuid>, got 'GPU-xyz'"),
    ("gpus.0.pci_bus_id", "7:0", "gpus[0].pci_bus_id: not a PCI address"),
    ("gpus.0.minor", -1, "gpus[0].minor: must be >= 0, got -1"),
    ("gpus.0.architecture", "fermi", "gpus[0].architecture: unknown 'fermi'"),
    ("gpus.0.compute_capability", "8", "gpus[0].compute_capability: expected MAJOR.MINOR"),
    ("gpus.0.mig.mode", "on", "gpus[0].mig.mode: expected enabled, disabled or unsupported"),
    (f"{GI}.0.profile", "5g.25gb", "[0].profile: unknown profile '5g.25gb' for A100-SXM4-40GB"),
    (f"{GI}.0.placement", {"start": 2}, "[0].placement: start 2 is not a valid placement"),
    (f"{GI}.0.placement", {"start": 4, "size": 2}, "size 2 does not match profile 3g.20gb"),
    (
        f"{GI}.0.compute_instances",
        [{"id": 0, "slices": 2}, {"id": 1, "slices": 2}],
        "[0].compute_instances: use 4 compute slices, profile 3g.20gb has 3",
    ),
    (
        f"{GI}.1",
        {"id": 2, "profile": "1g.5gb", "placement": {"start": 5}},
        "[1].placement: memory slice 5 already used by GPU instance 1",
    ),
    (
        f"{GI}.1",
        {"id": 1, "profile": "1g.5gb", "placement": {"start": 0}},
        "gpus[0].mig.gpu_instances[1].id: duplicate GPU instance id 1",
    ),
    ("gpus.1", _base()["gpus"][0], f"gpus[1].uuid: '{UUID0}' already used by gpus[0].uuid"),
    (
        "errors",
        [{"call": "nvmlDeviceGetPowerUsage", "error": "GPU_IS_LOST"}],
        "errors[0].call: 'nvmlDeviceGetPowerUsage' is not an entry point of the fake NVML",
    ),
    (
        "errors",
        [{"call": "nvmlDeviceGetUUID", "error": "LOST"}],
        "errors[0].error: expected an NVML error name like GPU_IS_LOST, got 'LOST'",
    ),
    (
        "errors",
        [{"call": "nvmlDeviceGetUUID", "error": "GPU_IS_LOST", "device": 9}],
        "errors[0].device: no GPU 9 (the topology has 1)",
    ),
    (
        "errors",
        [{"call": "nvmlDeviceGetUUID", "error": "GPU_IS_LOST", "device": "a:b"}],
        "errors[0].device: expected a GPU index or GPU:MIG index, got 'a:b'",
    ),
    ("gpus.0.name", "tab\there", "gpus[0].name: must be a non-empty single line without tabs"),
    ("gpus.0.ecc", "yes", "gpus[0].ecc: expected true or false, got str 'yes'"),
    ("gpus.0.numa_node", -1, "gpus[0].numa_node: must be >= 0, got -1"),
    ("gpus.0.pcie_path", "hb0//sw", "gpus[0].pcie_path: expected names separated by '/'"),
    (
        "gpus.1",
        {**_base()["gpus"][0], "uuid": UUID1, "pci_bus_id": "0000:08:00.0", "numa_node": 0},
        "gpus[0].numa_node: missing (give every GPU's NUMA node, or none)",
    ),
    (
        "gpus",
        [
            {**_base()["gpus"][0], "numa_node": 0, "pcie_path": "hb0/sw0"},
            {
                **_base()["gpus"][0],
                "uuid": UUID1,
                "pci_bus_id": "0000:08:00.0",
                "numa_node": 1,
                "pcie_path": "hb0/sw1",
            },
        ],
        "gpus[1].numa_node: 1, but host bridge 'hb0' is in NUMA node 0 (gpus[0])",
    ),
    (
        "nvlink",
        {"bridges": [{"gpus": [0, 0], "links": 1}]},
        "nvlink.bridges[0].gpus: expected two different GPU indexes (0..0), got [0, 0]",
    ),
    (
        "nvlink",
        {"bridges": [{"gpus": [0, 1], "links": 1}]},
        "nvlink.bridges[0].gpus: expected two different GPU indexes (0..0), got [0, 1]",
    ),
    ("nvlink", {"colour": "green"}, "unknown field(s) in nvlink: colour"),
    (f"{GI}.0.id", 15, "gpu_instances[0].id: must be <= 14, got 15"),
    ("gpus.0.numa_node", 1024, "gpus[0].numa_node: must be <= 1023, got 1024"),
    (
        "errors",
        [{"call": "*", "device": "0:7", "error": "GPU_IS_LOST"}],
        "errors[0].device: no MIG device 0:7 (NVIDIA A100-SXM4-40GB has at most 7)",
    ),
    (
        "nvlink",
        {"nvswitches": ["0000:c4:00.0"], "links_per_gpu": 13},
        "nvlink: gpus[0] would use 13 NVLinks, NVIDIA A100-SXM4-40GB has 12",
    ),
    (
        "nvlink",
        {"links_per_gpu": 2},
        "nvlink.links_per_gpu: give it (> 0) together with nvswitches, and only then",
    ),
    (
        "nvlink",
        {"nvswitches": ["0000:07:00.0"], "links_per_gpu": 2},
        "nvlink.nvswitches[0]: 0000:07:00.0 is already used by a GPU or switch",
    ),
]


@pytest.mark.parametrize(("path", "value", "message"), CASES)
def test_validation_messages(path: str, value: Any, message: str) -> None:
    with pytest.raises(TopologyError) as exc:
        parse_topology(_with(path, value), "<test>")
    assert str(exc.value).startswith("<test>: ")
    assert message in str(exc.value)


def test_nvswitch_count_is_declared_once() -> None:
    data = {**_base(), "nvlink": {"nvswitches": ["0000:c4:00.0"], "links_per_gpu": 2}}
    assert parse_topology(data, "<test>").extras.nvswitches == 1
    with pytest.raises(TopologyError) as exc:
        parse_topology({**data, "extras": {"nvswitches": 6}}, "<test>")
    assert str(exc.value) == (
        "<test>: extras.nvswitches: 6, but nvlink.nvswitches lists 1 "
        "(omit it: it defaults to that list's length)"
    )


def test_not_a_mapping() -> None:
    with pytest.raises(TopologyError, match=re.escape("<test>: top level: expected a mapping")):
        parse_topology([], "<test>")
    with pytest.raises(TopologyError, match=re.escape("<test>: gpus[0]: expected a mapping")):
        parse_topology({**_base(), "gpus": ["A100"]}, "<test>")


def test_bad_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(TopologyError) as exc:
        load_topology(path)
    assert str(exc.value) == (
        f"{path}:2:1: not valid YAML: while parsing a flow sequence did not find expected ',' "
        "or ']'"
    )


def test_unknown_name_lists_shipped() -> None:
    with pytest.raises(TopologyError, match=r"unknown topology 'nope' .*dgx-a100-mig"):
        load_topology("nope")


def test_defaults_and_derived_uuids() -> None:
    topo = parse_topology(_base(), "<test>")
    gpu = topo.gpus[0]
    assert gpu.minor == 0 and gpu.mig_pending  # pending defaults to the current mode
    (mig,) = gpu.mig_devices
    assert re.fullmatch(r"MIG-[0-9a-f-]{36}", mig.uuid)
    assert mig.uuid == parse_topology(_base(), "<again>").gpus[0].mig_devices[0].uuid
    assert topo.nvml_version == "12.550.163.01" and topo.cuda_driver_version == 12040


def test_flat_file_values_have_no_separators() -> None:
    for name in ("dgx-a100-mig", "workstation"):
        for line in render(load_topology(name)).splitlines():
            if line.startswith("#"):
                continue
            kind, *fields = line.split("\t")
            assert kind.isalpha()
            assert all(re.fullmatch(r"[a-z_0-9]+=[^\t\n]+", f) for f in fields), line


# ------------------------------------------------------------------ constants vs nvml.h


@pytest.fixture(scope="module")
def header() -> str:
    require_toolchain()
    return cc.find_nvml_header().read_text()


def test_error_codes_match_header(header: str) -> None:
    enum = header[header.index("typedef enum nvmlReturn_enum") :]
    enum = enum[: enum.index("} nvmlReturn_t;")]
    values = {m[1]: int(m[2]) for m in re.finditer(r"NVML_(?:ERROR_)?(\w+)\s*=\s*(\d+)", enum)}
    assert {k: values[k] for k in NVML_ERRORS} == NVML_ERRORS


def test_architectures_and_profiles_match_header(header: str) -> None:
    defines = {
        m[1]: int(m[2], 0) for m in re.finditer(r"#define (\w+)\s+(0x[0-9A-Fa-f]+|\d+)\b", header)
    }
    assert {k: defines[f"NVML_DEVICE_ARCH_{k.upper()}"] for k in ARCHITECTURES} == ARCHITECTURES
    assert {
        k: defines[f"NVML_GPU_INSTANCE_PROFILE_{k}"] for k in PROFILE_INDEXES
    } == PROFILE_INDEXES
    for model in MODELS.values():
        assert len({p.index for p in model.mig_profiles}) == len(model.mig_profiles)


def test_interconnect_constants_match_pynvml() -> None:
    """The enums without explicit values in nvml.h, checked against pynvml's spelling of them."""
    import pynvml

    assert {k: getattr(pynvml, f"NVML_TOPOLOGY_{k}") for k in TOPOLOGY_LEVELS} == TOPOLOGY_LEVELS
    assert {k: getattr(pynvml, f"NVML_P2P_STATUS_{k}") for k in P2P_STATUS} == P2P_STATUS
    assert [
        P2P_CAPS.index("WRITE"),
        P2P_CAPS.index("PCI"),
    ] == [pynvml.NVML_P2P_CAPS_INDEX_WRITE, pynvml.NVML_P2P_CAPS_INDEX_PCI]
    assert {
        k: getattr(pynvml, f"NVML_NVLINK_DEVICE_TYPE_{k}") for k in NVLINK_DEVICE_TYPES
    } == NVLINK_DEVICE_TYPES
    versions = {
        "pascal": "1_0",
        "volta": "2_0",
        "turing": "2_2",
        "ampere": "3_0",
        "hopper": "4_0",
        "blackwell": "5_0",
    }
    assert {
        k: getattr(pynvml, f"NVML_NVLINK_VERSION_{v}") for k, v in versions.items()
    } == NVLINK_VERSIONS


def test_injectable_calls_are_the_library_exports() -> None:
    require_toolchain()
    lib_path = cc.build_fake_nvml()
    lib = ctypes.CDLL(str(lib_path))
    for name in INJECTABLE_CALLS:
        assert any(hasattr(lib, f"{name}{sfx}") for sfx in ("", "_v2", "_v3")), name
    nm = need_tool("nm")
    out = subprocess.run(
        [nm, "-D", "--defined-only", str(lib_path)], capture_output=True, text=True, check=True
    ).stdout
    exported = {re.sub(r"_v\d+$", "", line.split()[-1]) for line in out.splitlines()}
    aliases = {
        "nvmlInitWithFlags",
        "nvmlDeviceGetGpuInstanceProfileInfoV",
        "nvmlGpuInstanceGetComputeInstanceProfileInfoV",
        "nvmlErrorString",
    }
    assert exported - aliases == INJECTABLE_CALLS


def test_shipped_files_are_valid_yaml_documents() -> None:
    for path in topologies_dir().glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert data["name"] == path.stem, path
