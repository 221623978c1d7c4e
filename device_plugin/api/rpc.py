"""gRPC plumbing for the v1beta1 services, derived from the service descriptors in gen/.

protoc's `_grpc` modules are not generated: they pin the grpcio release that generated them
(an older grpcio refuses to import them) and only restate what the descriptor already says.
Here every method path, message class and streaming kind comes from the descriptor, so the
one declaration stays specs/kubelet/api.proto.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from device_plugin.api.gen import api_pb2 as pb


def _service(name: str) -> ServiceDescriptor:
    service: ServiceDescriptor = pb.DESCRIPTOR.services_by_name[name]
    return service


def _message(method: MethodDescriptor, which: str) -> Any:
    return getattr(pb, getattr(method, which).name)


def service_handler(name: str, servicer: object) -> grpc.GenericRpcHandler:
    """A handler serving service `name` ("DevicePlugin", "Registration") with `servicer`'s
    methods, named as in the .proto and called as grpcio calls behaviours."""
    service = _service(name)
    handlers = {}
    for method in service.methods:
        behaviour = getattr(servicer, method.name, None)
        if behaviour is None:
            raise TypeError(f"{type(servicer).__name__} lacks {service.full_name}.{method.name}")
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            behaviour,
            request_deserializer=_message(method, "input_type").FromString,
            response_serializer=_message(method, "output_type").SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


class Stub:
    """A client of service `name` on `channel`: one callable attribute per method."""

    def __init__(self, channel: grpc.Channel, name: str) -> None:
        service = _service(name)
        self.methods: dict[str, Callable[..., Any]] = {}
        for method in service.methods:
            make = channel.unary_stream if method.server_streaming else channel.unary_unary
            self.methods[method.name] = make(
                f"/{service.full_name}/{method.name}",
                request_serializer=_message(method, "input_type").SerializeToString,
                response_deserializer=_message(method, "output_type").FromString,
            )

    def __getattr__(self, name: str) -> Callable[..., Any]:
        try:
            return self.methods[name]
        except KeyError:
            raise AttributeError(name) from None
