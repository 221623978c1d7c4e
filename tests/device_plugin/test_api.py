"""The committed kubelet API: the .proto is the official one field by field, gen/ is what
`make proto` produces from it, and the gRPC plumbing follows the descriptors."""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2

from device_plugin import api
from device_plugin.api import genproto
from nri_plugin.protocol import genproto as nri_genproto
from tests.require import need


def _descriptor(proto_text: str) -> descriptor_pb2.FileDescriptorProto:
    """protoc's view of a .proto, without what only Go code generation reads."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "api.proto"
        src.write_text(proto_text, encoding="utf-8")
        out = Path(tmp) / "set.pb"
        assert protoc.main(["protoc", f"-I{tmp}", f"--descriptor_set_out={out}", str(src)]) == 0
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (file,) = files.file
    file.ClearField("options")
    return file


def _differences(
    ours: descriptor_pb2.FileDescriptorProto, theirs: descriptor_pb2.FileDescriptorProto
) -> list[str]:
    out = []
    if ours.package != theirs.package:
        out.append(f"package {ours.package} != {theirs.package}")
    mine = {m.name: m for m in ours.message_type}
    for message in theirs.message_type:
        if message.name not in mine:
            out.append(f"message {message.name} missing")
            continue
        fields = {f.name: f for f in mine[message.name].field}
        for field in message.field:
            field.ClearField("options")
            if fields.get(field.name) != field:
                out.append(
                    f"{message.name}.{field.name}: ours {fields.get(field.name)} theirs {field}"
                )
        out += [
            f"{message.name}.{n}: extra" for n in fields if n not in {f.name for f in message.field}
        ]
        if mine[message.name].nested_type != message.nested_type:
            out.append(f"{message.name}: nested types differ")
    out += [f"message {n}: extra" for n in mine if n not in {m.name for m in theirs.message_type}]
    if list(ours.service) != list(theirs.service):
        out.append(f"services differ: ours {list(ours.service)} theirs {list(theirs.service)}")
    return out


def test_committed_proto_is_the_official_one_field_by_field() -> None:
    from tests.device_plugin.official import official_proto
    from tests.nri.debian_protos import DebianFetchError

    try:
        official = official_proto()
    except DebianFetchError as error:
        need(False, f"the official kubelet api.proto is not available: {error}")
        raise
    theirs = _descriptor(genproto.strip_gogo(official.read_text(encoding="utf-8")))
    ours = _descriptor(genproto.PROTO_PATH.read_text(encoding="utf-8"))
    assert _differences(ours, theirs) == []
    assert ours.package == api.VERSION  # gRPC paths are /v1beta1.Registration/Register, ...
    # and the official file really carried what strip_gogo removes
    assert "gogoproto" in official.read_text(encoding="utf-8")


def test_a_changed_field_is_a_difference() -> None:
    text = genproto.PROTO_PATH.read_text(encoding="utf-8")
    changed = text.replace(
        "repeated CDIDevice cdi_devices = 5;", "repeated CDIDevice cdi_devices = 6;"
    )
    assert changed != text
    differences = _differences(_descriptor(changed), _descriptor(text))
    assert len(differences) == 1 and "ContainerAllocateResponse.cdi_devices" in differences[0]


def test_strip_gogo_removes_only_gogo() -> None:
    text = (
        'syntax = "proto3";\npackage v1beta1;\n'
        'import "github.com/gogo/protobuf/gogoproto/gogo.proto";\n'
        "option (gogoproto.marshaler_all) = true;\n"
        "message A {\n"
        '  repeated string devices_ids = 1 [(gogoproto.customname) = "DevicesIDs"];\n}\n'
    )
    assert genproto.strip_gogo(text) == (
        'syntax = "proto3";\npackage v1beta1;\nmessage A {\n  repeated string devices_ids = 1;\n}\n'
    )


def test_committed_gen_is_current() -> None:
    assert nri_genproto.stale_files(genproto.GEN_DIR, (genproto.PROTO,)) == [], (
        "run `make proto` and commit device_plugin/api/gen"
    )


def test_service_handler_needs_every_method() -> None:
    class Partial:
        def Register(self, request: object, context: object) -> object:
            return api.pb.Empty()

    api.service_handler("Registration", Partial())
    with pytest.raises(
        TypeError, match=r"Partial lacks v1beta1.DevicePlugin.GetDevicePluginOptions"
    ):
        api.service_handler("DevicePlugin", Partial())


def test_stub_and_handler_talk_over_a_unix_socket(tmp_path: Path) -> None:
    from concurrent import futures

    seen = []

    class Kubelet:
        def Register(self, request: api.pb.RegisterRequest, context: object) -> api.pb.Empty:
            seen.append(request)
            return api.pb.Empty()

    server = grpc.server(futures.ThreadPoolExecutor(1))
    server.add_generic_rpc_handlers((api.service_handler("Registration", Kubelet()),))
    server.add_insecure_port(f"unix://{tmp_path}/kubelet.sock")
    server.start()
    try:
        with grpc.insecure_channel(f"unix://{tmp_path}/kubelet.sock") as channel:
            stub = api.Stub(channel, "Registration")
            stub.Register(
                api.pb.RegisterRequest(version=api.VERSION, resource_name="x/y"), timeout=5
            )
            with pytest.raises(AttributeError):
                stub.Allocate  # noqa: B018
    finally:
        server.stop(None)
    assert [r.resource_name for r in seen] == ["x/y"]
