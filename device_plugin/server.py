"""The DevicePlugin service of one resource, served with grpcio on its own unix socket.

kubelet calls: GetDevicePluginOptions, then ListAndWatch (held open: the full list again after
every health change of this resource's devices), GetPreferredAllocation when a pod is admitted,
Allocate per container. A bad request fails only that call, with a message naming the device.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc

from device_plugin import allocate, preferred
from device_plugin.api import HEALTHY, UNHEALTHY, pb, service_handler
from device_plugin.health import Board
from device_plugin.resources import Device, Resource

log = logging.getLogger("gpu_cdi.device_plugin")

WORKERS = 4  # one held by kubelet's ListAndWatch; Allocate calls come one pod at a time
WATCH_TICK = 1.0  # how often an idle ListAndWatch checks that kubelet is still there


def options() -> pb.DevicePluginOptions:
    """What kubelet may call: GetPreferredAllocation yes, PreStartContainer no (nothing to do)."""
    return pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)


class Service:
    """DevicePlugin for one resource; method names are the .proto's."""

    def __init__(
        self,
        resource: Resource,
        board: Board,
        handout: allocate.Handout,
        link: preferred.PairScore,
        stopping: threading.Event,
    ) -> None:
        self.resource = resource
        self.board = board
        self.handout = handout
        self.link = link
        self.stopping = stopping

    def why_unhealthy(self, device: Device) -> str | None:
        """Why `device` cannot be used now, or None."""
        return self.board.why(device.uuid, device.gpu_uuid)

    def devices(self) -> list[pb.Device]:
        """The device list as ListAndWatch sends it."""
        out = []
        for device in self.resource.devices:
            health = UNHEALTHY if self.why_unhealthy(device) else HEALTHY
            topology = None
            if device.numa is not None:
                topology = pb.TopologyInfo(nodes=[pb.NUMANode(ID=device.numa)])
            out.append(pb.Device(ID=device.id, health=health, topology=topology))
        return out

    def GetDevicePluginOptions(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> pb.DevicePluginOptions:
        """The options, as registered."""
        return options()

    def ListAndWatch(
        self, request: pb.Empty, context: grpc.ServicerContext
    ) -> Iterator[pb.ListAndWatchResponse]:
        """The devices now, then again on every change, until kubelet or we go away."""
        context.add_callback(self.board.wake)
        sent: list[tuple[str, str]] | None = None
        version = -1
        while context.is_active() and not self.stopping.is_set():
            version = self.board.version
            devices = self.devices()
            state = [(d.ID, d.health) for d in devices]
            if state != sent:
                if sent is not None:
                    unhealthy = sum(1 for _, health in state if health == UNHEALTHY)
                    log.info(
                        "%s: sending %d devices to kubelet (%d unhealthy)",
                        self.resource.name,
                        len(state),
                        unhealthy,
                    )
                yield pb.ListAndWatchResponse(devices=devices)
                sent = state
            self.board.wait(version, WATCH_TICK)

    def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: grpc.ServicerContext
    ) -> pb.PreferredAllocationResponse:
        """The best-connected choice for each container."""
        response = pb.PreferredAllocationResponse()
        for ask in request.container_requests:
            try:
                ids = preferred.preferred(
                    self.resource,
                    list(ask.available_deviceIDs),
                    list(ask.must_include_deviceIDs),
                    ask.allocation_size,
                    self.link,
                )
            except preferred.PreferenceError as error:
                log.warning("GetPreferredAllocation: %s", error)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            response.container_responses.add(deviceIDs=ids)
        return response

    def Allocate(
        self, request: pb.AllocateRequest, context: grpc.ServicerContext
    ) -> pb.AllocateResponse:
        """What each container gets; an unknown or unhealthy device fails the call."""
        response = pb.AllocateResponse()
        for ask in request.container_requests:
            try:
                devices = allocate.granted(self.resource, ask.devices_ids, self.why_unhealthy)
            except allocate.AllocateError as error:
                log.warning("Allocate refused: %s", error)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            response.container_responses.append(
                allocate.container_response(self.resource, devices, self.handout)
            )
            log.debug("%s: allocated %s", self.resource.name, ",".join(ask.devices_ids))
        return response

    def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: grpc.ServicerContext
    ) -> pb.PreStartContainerResponse:
        """Nothing to prepare (kubelet does not call it: pre_start_required is false)."""
        return pb.PreStartContainerResponse()


class PluginServer:
    """A grpcio server for one Service on `path`; `alive()` says whether the socket is ours."""

    def __init__(self, service: Service, path: str) -> None:
        self.service = service
        self.path = path
        self.server: grpc.Server | None = None
        self.executor: futures.ThreadPoolExecutor | None = None
        self._inode: tuple[int, int, int] | None = None

    def start(self) -> None:
        """Serve on a fresh socket (a stale file of the same name is replaced)."""
        self.stop()
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise OSError(f"cannot serve on {self.path}: {folder} is not a directory")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.executor = futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="dp")
        server = grpc.server(self.executor)
        server.add_generic_rpc_handlers((service_handler("DevicePlugin", self.service),))
        try:
            bound = server.add_insecure_port(f"unix://{self.path}")
        except RuntimeError as error:
            bound = 0
            reason = str(error)
        else:
            reason = "grpc could not bind it"
        if not bound:
            raise OSError(f"cannot serve on {self.path}: {reason}")
        server.start()
        self.server = server
        self._inode = file_identity(self.path)

    def alive(self) -> bool:
        """Whether our socket file is still in place (kubelet removes it when it restarts)."""
        return self.server is not None and file_identity(self.path) == self._inode

    def replaced(self) -> bool:
        """Whether another file took our socket's path (another plugin process took over)."""
        now = file_identity(self.path)
        return self.server is not None and now is not None and now != self._inode

    def stop(self, grace: float | None = None) -> None:
        """Stop serving and remove our socket (if it is still ours)."""
        if self.server is None:
            return
        mine = self.alive()
        # grpcio unlinks the socket path as it stops, whoever's file is there by then: wait for
        # that before a new socket is made at the same path
        self.server.stop(grace).wait((grace or 0) + 5)
        self.server = None
        if self.executor is not None:  # grpcio leaves its workers to whoever made them
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
        if mine:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def file_identity(path: str) -> tuple[int, int, int] | None:
    """Which file is at `path` (device, inode, change time: a new file may reuse the inode of
    one just removed), None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)
