"""kubelet's device-plugin API v1beta1 for Python: messages (`pb`), constants, gRPC plumbing.

Layers: `gen` (protobuf messages generated from specs/kubelet/api.proto), `rpc` (services
derived from the descriptors). Nothing here knows about GPUs.
"""

from device_plugin.api.gen import api_pb2 as pb
from device_plugin.api.rpc import Stub, service_handler

# constants.go of the same package
VERSION = "v1beta1"
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
DEVICE_PLUGIN_PATH = "/var/lib/kubelet/device-plugins/"
KUBELET_SOCKET = DEVICE_PLUGIN_PATH + "kubelet.sock"
PRE_START_TIMEOUT = 30.0  # seconds kubelet waits for PreStartContainer

__all__ = [
    "DEVICE_PLUGIN_PATH",
    "HEALTHY",
    "KUBELET_SOCKET",
    "PRE_START_TIMEOUT",
    "UNHEALTHY",
    "VERSION",
    "Stub",
    "pb",
    "service_handler",
]
