"""Device injection through the reference library (Go, 0.8.0: Cache.InjectDevices) and through
cdi.inject.inject_devices, on the same containerd-like OCI spec: after normalization (a
round-trip through the runtime-spec Go types) the results must be equal, and a request the
reference refuses must be refused by us too. Documented deviations (deviations.yaml,
`injections`) are asserted as exactly those deviations."""

from __future__ import annotations

import copy
import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from cdi.dump import to_data
from cdi.errors import CdiError, InjectionError
from cdi.inject import inject_devices, merge_edits, resolve_all
from cdi.names import parse_annotations
from cdi.registry import Registry
from cdi.spec import HOOK_STAGES
from tests.conformance import judge
from tests.conformance.corpus_data import (
    CORPUS,
    canonical,
    doc_sections,
    injection_deviations,
    scenario_dirs,
)
from tests.require import need_root

OCI = {
    "containerd-pod": json.loads((CORPUS / "oci" / "containerd-pod.json").read_text()),
    "empty": {},
    "root-user": {"process": {"user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"]}},
    # An env entry without "=": runtime-tools indexes the whole entry as the name.
    "env-without-value": {
        "process": {"user": {"uid": 1000, "gid": 1000}, "env": ["ACCEL_RUNTIME", "PATH=/bin"]}
    },
    # Odd but legal shapes: duplicate mount destinations and device paths, trailing slashes,
    # uid 0 with gid 1000, null env, an existing intelRdt and prestart hook, no user at all.
    "odd": {
        "process": {"user": {"uid": 0, "gid": 1000}, "env": None, "args": ["true"]},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/proc", "type": "bind", "source": "/srv/proc"},
            {"destination": "/run/", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/usr/bin/nvidia-smi/", "type": "bind", "source": "/x"},
            {"destination": "relative/dir", "type": "bind", "source": "/y"},
        ],
        "hooks": {"prestart": [{"path": "/bin/old"}], "poststop": None},
        "linux": {
            "devices": [
                {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0},
                {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 255},
                {"path": "/dev/accel0", "type": "b", "major": 8, "minor": 0},
            ],
            "intelRdt": {"closID": "old", "memBwSchema": "MB:0=10"},
            "resources": {"devices": None},
        },
    },
    "no-user": {"process": {"env": ["A=0"]}, "linux": {}},
}

GPU = "nvidia.com/gpu="
ACCEL = "vendor.example/accel="
NODE = "vendor.example/node="


@attrs.frozen
class Case:
    id: str
    scenario: str
    devices: tuple[str, ...]
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    oci: str = "containerd-pod"


def case(
    id: str,
    scenario: str,
    *devices: str,
    annotations: Mapping[str, str] | None = None,
    oci: str = "containerd-pod",
) -> Case:
    return Case(id, scenario, devices, dict(annotations or {}), oci)


CASES = [
    case("gpu0", "basic", GPU + "0"),
    case("gpu0-gpu1", "basic", GPU + "0", GPU + "1"),
    case("gpu1-gpu0", "basic", GPU + "1", GPU + "0"),
    case("all", "basic", GPU + "all"),
    case("all-and-0", "basic", GPU + "all", GPU + "0"),
    case("uuid", "basic", GPU + "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"),
    case("mig", "basic", GPU + "0:1", GPU + "1"),
    case("accel-a0", "basic", ACCEL + "a0"),
    case("accel-a0-a1", "basic", ACCEL + "a0", ACCEL + "a1"),
    case("accel-a1-a0", "basic", ACCEL + "a1", ACCEL + "a0"),
    case("accel-mount-sort", "basic", ACCEL + "mounts-only"),
    case("three-vendors", "basic", GPU + "0", ACCEL + "a0", "other.example/net=port0", GPU + "1"),
    case("net-then-gpu", "basic", "other.example/net=port0", GPU + "all"),
    case("nothing", "basic"),
    case("duplicate-device", "basic", GPU + "0", GPU + "1", GPU + "0"),
    case("duplicate-device-three-times", "basic", ACCEL + "a0", ACCEL + "a0", ACCEL + "a0"),
    case("unknown", "basic", GPU + "9"),
    case("unknown-several", "basic", GPU + "0", GPU + "9", "vendor.example/x=1", GPU + "7"),
    case("unqualified", "basic", "0"),
    case("annotation", "basic", annotations={"cdi.k8s.io/gpu": f"{GPU}1,{GPU}0"}),
    case(
        "annotation-after-request",
        "basic",
        GPU + "0",
        annotations={"cdi.k8s.io/b": f"{GPU}1,{GPU}0", "cdi.k8s.io/a": ACCEL + "a1"},
    ),
    case("annotation-other-prefix", "basic", GPU + "0", annotations={"example.com/x": GPU + "1"}),
    case("annotation-bad", "basic", GPU + "0", annotations={"cdi.k8s.io/gpu": f"{GPU}1,"}),
    case("gpu0-empty-oci", "basic", GPU + "0", ACCEL + "a0", oci="empty"),
    case("gpu0-root-user", "basic", GPU + "0", ACCEL + "a0", oci="root-user"),
    case("env-without-value", "basic", ACCEL + "a0", oci="env-without-value"),
    case("odd-gpu", "basic", GPU + "0", GPU + "all", oci="odd"),
    case("odd-accel", "basic", ACCEL + "a0", ACCEL + "a1", ACCEL + "mounts-only", oci="odd"),
    case("odd-mixed", "basic", ACCEL + "a1", GPU + "1", "other.example/net=port0", oci="odd"),
    case("no-user", "basic", GPU + "1", ACCEL + "a0", oci="no-user"),
    case("no-user-nothing", "basic", oci="no-user"),
    case("priority-high-wins", "priority", "vendor.example/device=dev0"),
    case(
        "priority-both", "priority", "vendor.example/device=low-only", "vendor.example/device=dev0"
    ),
    case("conflict-dropped", "priority-conflict-low", "vendor.example/device=dev0"),
    case("conflict-others-ok", "priority-conflict-low", "vendor.example/device=c-only"),
    case("conflict-same-dir", "conflict-same-dir", "vendor.example/device=only-a"),
    case("broken-file-device", "conflict-same-dir", "vendor.example/device=dev9"),
    case(
        "three-dirs",
        "three-dirs",
        *(f"vendor.example/device=d{i}" for i in (3, 1, 2)),
        "vendor.example/other=d1",
    ),
    case(
        "same-kind-files", "same-kind-files", "vendor.example/device=p2", "vendor.example/device=p1"
    ),
    *(
        case(f"node-{name}", "host-nodes", NODE + name)
        for name in (
            "missing",
            "symlink",
            "directory",
            "regular-file",
            "type-mismatch",
            "type-u",
            "type-c-major-zero",
            "minor-only",
            "fifo-no-host",
            "fully-specified",
            "same-path-twice",
            "ok",
        )
    ),
    case("node-ok-then-missing", "host-nodes", NODE + "ok", NODE + "missing"),
]

DEVIATIONS = injection_deviations()


def requested(devices: Sequence[str], annotations: Mapping[str, str]) -> list[str]:
    """The request containerd's CRI makes: the devices, then annotation devices not yet
    requested (annotation keys in sorted order, as the runner takes them)."""
    out = list(devices)
    for key in sorted(annotations):
        for device in parse_annotations({key: annotations[key]})[1]:
            if device not in out:
                out.append(device)
    return out


def run_ours(dirs: Sequence[str], oci: dict[str, Any], c: Case) -> dict[str, Any]:
    """Our injection; raises CdiError like the plugin would see it."""
    registry = Registry(list(dirs))
    names = requested(c.devices, c.annotations)
    before = copy.deepcopy(oci)
    result = inject_devices(oci, names, registry)
    assert oci == before, "inject_devices changed its input"
    return result


def quoted(message: str) -> list[str]:
    return re.findall(r'"([^"]*)"', message)


def compare(reference: judge.Reference, dirs: Sequence[str], c: Case) -> None:
    oci = copy.deepcopy(OCI[c.oci])
    ref = reference.try_inject(dirs, oci, c.devices, c.annotations)
    assert not ref.panic, ref.error
    try:
        ours = run_ours(dirs, oci, c)
    except CdiError as error:
        assert not ref.ok, f"we refused ({error}), the reference injected"
        message = str(error)
        for value in quoted(ref.error or ""):
            assert value in message, f"our error {message!r} lacks {value!r} ({ref.error})"
        if isinstance(error, InjectionError) and ref.unresolved:
            assert list(error.unresolved) == list(ref.unresolved)
        return
    assert ref.ok, f"the reference refused ({ref.error}), we injected"
    assert ref.spec is not None
    assert reference.normalize(ours) == ref.spec


@pytest.mark.parametrize("c", [c for c in CASES if c.id not in DEVIATIONS], ids=lambda c: c.id)
def test_same_injection(reference: judge.Reference, c: Case) -> None:
    compare(reference, scenario_dirs(c.scenario), c)


@pytest.mark.parametrize("c", [c for c in CASES if c.id not in DEVIATIONS], ids=lambda c: c.id)
def test_same_merged_edits(reference: judge.Reference, c: Case) -> None:
    """The edits merged for a request (before any host lookup) are the reference's."""
    dirs = scenario_dirs(c.scenario)
    try:
        theirs = reference.edits(dirs, c.devices, c.annotations)
    except judge.ReferenceInjectError:
        with pytest.raises(CdiError):
            merge_edits(resolve_all(requested(c.devices, c.annotations), Registry(dirs)))
        return
    names = requested(c.devices, c.annotations)
    ours = to_data(merge_edits(resolve_all(names, Registry(dirs))))
    assert canonical(ours) == canonical(theirs)


@pytest.mark.parametrize("c", [c for c in CASES if c.id in DEVIATIONS], ids=lambda c: c.id)
def test_repeated_devices_are_merged_once(reference: judge.Reference, c: Case) -> None:
    """Documented deviation: a device requested twice is merged once. Ours equals the
    reference on the request without repeats, and differs from the reference on the request
    as given (which duplicates hooks and cgroup rules)."""
    assert DEVIATIONS[c.id] in doc_sections()
    dirs = scenario_dirs(c.scenario)
    oci = OCI[c.oci]
    ours = reference.normalize(run_ours(dirs, copy.deepcopy(oci), c))
    once = list(dict.fromkeys(c.devices))
    assert ours == reference.inject(dirs, copy.deepcopy(oci), once, c.annotations)
    assert ours != reference.inject(dirs, copy.deepcopy(oci), c.devices, c.annotations)


def test_cases_cover_what_they_claim(reference: judge.Reference) -> None:
    """The case list really exercises successes, failures and the interesting edits."""
    dirs = scenario_dirs("basic")
    pod = OCI["containerd-pod"]
    out = reference.inject(dirs, pod, [GPU + "0", ACCEL + "a0"])
    assert out["process"]["env"][2] == "NVIDIA_VISIBLE_DEVICES=all"  # pre-existing one kept
    assert "NVIDIA_VISIBLE_DEVICES=0" in out["process"]["env"]
    assert set(HOOK_STAGES) <= set(out["hooks"])
    assert out["linux"]["intelRdt"]["closID"] == "accel"
    assert [m["destination"] for m in out["mounts"]][:2] == ["/dev", "/proc"]
    failures = [
        c.id
        for c in CASES
        if not reference.try_inject(
            scenario_dirs(c.scenario), OCI[c.oci], c.devices, c.annotations
        ).ok
    ]
    assert {"unknown", "annotation-bad", "node-missing", "conflict-dropped"} <= set(failures)
    assert len(failures) < len(CASES) / 2


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    return tmp_path


def _spec_with_nodes(directory: Path, nodes: list[dict[str, Any]]) -> None:
    spec = {
        "cdiVersion": "0.5.0",
        "kind": "vendor.example/tmp",
        "devices": [{"name": "d", "containerEdits": {"deviceNodes": nodes}}],
    }
    (directory / "etc" / "tmp.json").write_text(json.dumps(spec))


def test_fifo_on_the_host(reference: judge.Reference, node_dir: Path) -> None:
    fifo = node_dir / "fifo"
    os.mkfifo(fifo)
    _spec_with_nodes(
        node_dir,
        [
            {"path": "/dev/vendor-fifo", "hostPath": str(fifo)},
            {"path": "/dev/vendor-fifo2", "hostPath": str(fifo), "type": "c"},
        ],
    )
    compare(reference, [str(node_dir / "etc")], case("fifo", "", "vendor.example/tmp=d"))
    _spec_with_nodes(node_dir, [{"path": "/dev/vendor-fifo", "hostPath": str(fifo)}])
    compare(reference, [str(node_dir / "etc")], case("fifo", "", "vendor.example/tmp=d"))


def test_block_and_char_nodes_made_with_mknod(reference: judge.Reference, node_dir: Path) -> None:
    need_root()
    block, char = node_dir / "blk", node_dir / "chr"
    os.mknod(block, 0o660 | stat.S_IFBLK, os.makedev(7, 200))
    os.mknod(char, 0o600 | stat.S_IFCHR, os.makedev(511, 1048575))
    _spec_with_nodes(
        node_dir,
        [
            {"path": "/dev/vendor-blk", "hostPath": str(block), "permissions": "r"},
            {"path": "/dev/vendor-blk-typed", "hostPath": str(block), "type": "b"},
            {"path": "/dev/vendor-chr", "hostPath": str(char), "uid": 7},
        ],
    )
    compare(reference, [str(node_dir / "etc")], case("mknod", "", "vendor.example/tmp=d"))
    _spec_with_nodes(node_dir, [{"path": "/dev/vendor-blk", "hostPath": str(block), "type": "c"}])
    compare(reference, [str(node_dir / "etc")], case("mknod", "", "vendor.example/tmp=d"))


def test_one_character_class_in_an_annotation(reference: judge.Reference) -> None:
    """Documented deviation: 0.8.0 panics parsing `nvidia.com/g=0` from an annotation (the
    container creation would crash); we refuse the request with an error."""
    assert "one-character vendor or class" in doc_sections()
    c = case("one-char", "basic", GPU + "0", annotations={"cdi.k8s.io/x": "nvidia.com/g=0"})
    dirs = scenario_dirs(c.scenario)
    ref = reference.try_inject(dirs, OCI[c.oci], c.devices, c.annotations)
    assert ref.panic, ref
    with pytest.raises(CdiError, match=re.escape("nvidia.com/g=0")):
        run_ours(dirs, copy.deepcopy(OCI[c.oci]), c)
