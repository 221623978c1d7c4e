"""Our .proto files against the ones NRI and ttrpc really use (as Debian packages them).

Descriptors are compared field by field: name, number, type, label and message/enum type of
every field, every enum value, every service method with its request and response types.

* NRI 0.6.1 (containerd 1.7.24): everything it declares must be in ours, identical. What we
  declare beyond it must be in the newest Debian NRI, identical there.
* Newest NRI in Debian (sid): every field of ours that it also has must be identical. Fields,
  messages, enum values and methods that only the newer release has are allowed: a plugin
  built from our .proto keeps unknown fields on decode (see the last test), and answers
  methods it lacks with Unimplemented, which is what newer runtimes expect.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from nri_plugin.protocol import api
from nri_plugin.protocol.gen import ttrpc_pb2
from tests.e2e import paths
from tests.nri import debian_protos
from tests.require import need, need_root

Shape = dict[str, dict[str, Any]]


def compile_proto(include: Path, name: str) -> descriptor_pb2.FileDescriptorProto:
    """Parse a .proto with grpcio-tools' protoc into a descriptor."""
    import grpc_tools  # type: ignore[import-untyped]

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        proc = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{include}", f"-I{well_known}",
             f"--descriptor_set_out={out}", name],
            capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 0, f"protoc {include / name}: {proc.stderr}"
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return fds.file[-1]


def ours(module: Any) -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fdp)
    return fdp


def shape(fdp: descriptor_pb2.FileDescriptorProto) -> Shape:
    """{"message Foo": {field: (number, type, label, type name)}, "enum E": ..., ...}."""
    pkg = f".{fdp.package}" if fdp.package else ""
    out: Shape = {}

    def strip(type_name: str) -> str:
        return type_name[len(pkg) + 1 :] if pkg and type_name.startswith(pkg + ".") else type_name

    def message(msg: descriptor_pb2.DescriptorProto, prefix: str) -> None:
        name = f"{prefix}{msg.name}"
        out[f"message {name}"] = {
            f.name: (f.number, f.type, f.label, strip(f.type_name)) for f in msg.field
        }
        for nested in msg.nested_type:
            message(nested, f"{name}.")
        for enum in msg.enum_type:
            out[f"enum {name}.{enum.name}"] = {v.name: v.number for v in enum.value}

    for msg in fdp.message_type:
        message(msg, "")
    for enum in fdp.enum_type:
        out[f"enum {enum.name}"] = {v.name: v.number for v in enum.value}
    for svc in fdp.service:
        out[f"service {svc.name}"] = {
            m.name: (strip(m.input_type), strip(m.output_type)) for m in svc.method
        }
    return out


def differences(theirs: Shape, mine: Shape, *, theirs_complete: bool) -> list[str]:
    """Where `mine` disagrees with `theirs`.

    theirs_complete: everything in `theirs` must be in `mine` (else only shared items count).
    """
    problems = []
    for kind, items in theirs.items():
        if kind not in mine:
            if theirs_complete:
                problems.append(f"{kind}: missing in ours")
            continue
        for item, value in items.items():
            if item not in mine[kind]:
                if theirs_complete:
                    problems.append(f"{kind}: {item} missing in ours")
            elif mine[kind][item] != value:
                problems.append(f"{kind}: {item} is {mine[kind][item]} in ours, {value} upstream")
    return problems


def extras(base: Shape, mine: Shape) -> dict[str, list[str]]:
    """Items of ours that `base` does not have."""
    out: dict[str, list[str]] = {}
    for kind, items in mine.items():
        extra = [i for i in items if i not in base.get(kind, {})]
        if extra:
            out[kind] = extra
    return out


@pytest.fixture(scope="module")
def nri_061() -> Shape:
    need(
        paths.NRI_PROTO.is_file(),
        f"{paths.NRI_PROTO} (golang-github-containerd-nri-dev 0.6.1); {paths.INSTALL_HINT}",
    )
    fdp = compile_proto(paths.NRI_PROTO.parent, paths.NRI_PROTO.name)
    assert fdp.package == "nri.pkg.api.v1alpha1"
    return shape(fdp)


@pytest.fixture(scope="module")
def nri_newest() -> tuple[str, Shape]:
    need_root()  # apt-get with a private state directory
    try:
        version, proto = debian_protos.newest_nri_api()
    except (debian_protos.DebianFetchError, OSError) as exc:
        need(False, f"newest NRI api.proto from Debian: {exc}")
        raise
    return version, shape(compile_proto(proto.parent, proto.name))


def test_package_and_service_names_are_the_wire_names() -> None:
    assert api.DESCRIPTOR.package == "nri.pkg.api.v1alpha1"
    assert api.DESCRIPTOR.services_by_name["Plugin"].full_name == "nri.pkg.api.v1alpha1.Plugin"
    assert ttrpc_pb2.DESCRIPTOR.package == "ttrpc"


def test_matches_nri_0_6_1(nri_061: Shape) -> None:
    mine = shape(ours(api))
    assert differences(nri_061, mine, theirs_complete=True) == []
    # and it declares nothing 0.6.1 lacks except the later fields the next test checks
    assert set(extras(nri_061, mine)) <= {
        "message ConfigureRequest",
        "message SynchronizeRequest",
        "message SynchronizeResponse",
        "message PodSandbox",
        "message LinuxResources",
        "message LinuxPids",
        "message CDIDevice",
        "message ContainerAdjustment",
        "message LinuxContainerAdjustment",
    }


def test_matches_newest_debian_nri(nri_061: Shape, nri_newest: tuple[str, Shape]) -> None:
    version, newest = nri_newest
    mine = shape(ours(api))
    # Sentinels that grow with each release are only compared with 0.6.1.
    mine_cmp = {k: {i: v for i, v in items.items() if i != "LAST"} for k, items in mine.items()}
    assert differences(newest, mine_cmp, theirs_complete=False) == [], f"NRI {version}"
    # every later field of ours is really in the newest release, identical
    for kind, items in extras(nri_061, mine).items():
        for item in items:
            assert newest.get(kind, {}).get(item) == mine[kind][item], (
                f"{kind}: {item} is not in NRI {version} as we declare it"
            )


def test_ttrpc_envelope_matches_debian_ttrpc() -> None:
    request_proto = debian_protos.TTRPC_DIR / "request.proto"
    need(request_proto.is_file(), f"{request_proto} (golang-github-containerd-ttrpc-dev)")
    theirs = shape(compile_proto(debian_protos.TTRPC_DIR, "request.proto"))
    mine = shape(ours(ttrpc_pb2))
    for kind in ("message Request", "message Response", "message KeyValue"):
        assert mine[kind] == theirs[kind] or (
            kind == "message Response"
            and {**mine[kind], "status": theirs[kind]["status"]} == theirs[kind]
        ), kind
    # ttrpc's own Status is a stub (code only, no package); on the wire it is google.rpc.Status
    assert mine["message Response"]["status"][:3] == theirs["message Response"]["status"][:3]
    status = compile_proto(debian_protos.TTRPC_DIR, "proto/status.proto")
    assert shape(status)["message Status"]["code"] == mine["message Status"]["code"]


def test_unknown_fields_survive_a_round_trip() -> None:
    ctr = api.Container(id="c1")
    # field 21 (Container.user, NRI 0.11) and field 99: unknown to our .proto
    wire = ctr.SerializeToString() + bytes([0xAA, 0x01, 0x02, 0x08, 0x07]) + b"\x98\x06\x01"
    decoded = api.Container.FromString(wire)
    assert decoded.id == "c1"
    assert decoded.SerializeToString() == wire
