"""A kubelet stand-in: the device manager's side of the v1beta1 device-plugin API, in Python,
over grpcio, from the messages generated from the official api.proto (specs/kubelet/).

What it does is what kubelet 1.32's device manager does towards a plugin:

- serves Registration on <dir>/kubelet.sock; `start()` first removes everything in <dir> but
  its checkpoint file, as kubelet does on start (so `restart()` is a kubelet restart);
- Register: checks the version and that the resource name is an extended resource name, dials
  the plugin's endpoint in the same directory, calls GetDevicePluginOptions, then keeps a
  ListAndWatch stream open in a thread, recording every list (`lists[resource]`);
- `allocate(resource, n)`: picks `n` healthy unallocated devices, through
  GetPreferredAllocation when the plugin offers it, then calls Allocate with them, as pod
  admission does; the devices stay allocated until `release`.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import attrs
import grpc

from device_plugin.api import HEALTHY, VERSION, Stub, pb, service_handler

CHECKPOINT = "kubelet_internal_checkpoint"
_EXTENDED = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")


@attrs.define
class Registration:
    """One accepted Register call."""

    resource: str
    endpoint: str
    options: Any  # DevicePluginOptions from GetDevicePluginOptions
    at: float  # time.monotonic()


@attrs.define
class _Plugin:
    channel: grpc.Channel
    stub: Stub
    options: Any
    stream: Any = None
    allocated: set[str] = attrs.field(factory=set)


class FakeKubelet:
    """See the module docstring. Use as a context manager."""

    def __init__(self, directory: Path, *, refuse: Callable[[Any], str | None] | None = None):
        self.dir = Path(directory)
        self.socket = self.dir / "kubelet.sock"
        self.refuse = refuse  # RegisterRequest -> error message, or None to accept
        self.server: grpc.Server | None = None
        self.plugins: dict[str, _Plugin] = {}
        self.registrations: list[Registration] = []
        self.refusals: list[str] = []
        self.lists: dict[str, list[tuple[float, list[Any]]]] = {}
        self.changed = threading.Condition()

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> FakeKubelet:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> FakeKubelet:
        """Wipe the directory (not the checkpoint) and serve Registration on kubelet.sock."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for entry in self.dir.iterdir():
            if entry.name != CHECKPOINT and not entry.is_dir():
                entry.unlink()
        server = grpc.server(futures.ThreadPoolExecutor(4))
        server.add_generic_rpc_handlers((service_handler("Registration", self),))
        server.add_insecure_port(f"unix://{self.socket}")
        server.start()
        self.server = server
        return self

    def stop(self) -> None:
        """Stop serving, drop every plugin connection and remove kubelet.sock."""
        if self.server is not None:
            self.server.stop(None)
            self.server = None
        for plugin in self.plugins.values():
            plugin.channel.close()
        self.plugins.clear()
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    def restart(self) -> None:
        """What a kubelet restart looks like to plugins."""
        self.stop()
        self.start()

    # -- Registration service --------------------------------------------------------------

    def Register(self, request: Any, context: grpc.ServicerContext) -> Any:
        """kubelet's checks, then connect back to the plugin."""
        error = None
        if request.version != VERSION:
            error = f"Unsupported version {request.version!r}"
        elif not _EXTENDED.match(request.resource_name) or "kubernetes.io" in request.resource_name:
            error = f"invalid resource name {request.resource_name!r}"
        elif self.refuse is not None:
            error = self.refuse(request)
        if error:
            self.refusals.append(error)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
        endpoint = self.dir / request.endpoint
        channel = grpc.insecure_channel(f"unix://{endpoint}")
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
            stub = Stub(channel, "DevicePlugin")
            options = stub.GetDevicePluginOptions(pb.Empty(), timeout=10)
        except (grpc.FutureTimeoutError, grpc.RpcError) as exc:
            channel.close()
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot dial {endpoint}: {exc}")
        old = self.plugins.pop(request.resource_name, None)
        if old is not None:  # a second registration replaces the first
            old.channel.close()
        plugin = _Plugin(channel, stub, options)
        self.plugins[request.resource_name] = plugin
        # Recorded before the watch starts: a test that has seen the devices listed may
        # count on the registration being there.
        with self.changed:
            self.registrations.append(
                Registration(request.resource_name, request.endpoint, options, time.monotonic())
            )
            self.changed.notify_all()
        plugin.stream = stub.ListAndWatch(pb.Empty())
        threading.Thread(
            target=self._watch, args=(request.resource_name, plugin), daemon=True
        ).start()
        return pb.Empty()

    def _watch(self, resource: str, plugin: _Plugin) -> None:
        with contextlib.suppress(grpc.RpcError, ValueError):
            for response in plugin.stream:
                with self.changed:
                    self.lists.setdefault(resource, []).append(
                        (time.monotonic(), list(response.devices))
                    )
                    self.changed.notify_all()

    # -- what tests ask ----------------------------------------------------------------------

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = ""
    ) -> None:
        """Block until `predicate()` (checked on every change), else AssertionError."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"kubelet stand-in: timed out waiting for {what}")
                self.changed.wait(min(left, 0.1))

    def devices(self, resource: str) -> list[Any]:
        """The plugin's latest device list for `resource`."""
        return self.lists[resource][-1][1] if self.lists.get(resource) else []

    def healthy(self, resource: str) -> list[str]:
        """IDs of the healthy devices in the latest list."""
        return [d.ID for d in self.devices(resource) if d.health == HEALTHY]

    def registered(self, resource: str, after: float = 0.0) -> bool:
        """Whether `resource` registered (after monotonic time `after`)."""
        return any(r.resource == resource and r.at > after for r in self.registrations)

    def preferred(
        self, resource: str, available: Sequence[str], must: Sequence[str], size: int
    ) -> list[str]:
        """GetPreferredAllocation for one container."""
        request = pb.PreferredAllocationRequest(
            container_requests=[
                pb.ContainerPreferredAllocationRequest(
                    available_deviceIDs=available,
                    must_include_deviceIDs=must,
                    allocation_size=size,
                )
            ]
        )
        response = self.plugins[resource].stub.GetPreferredAllocation(request, timeout=10)
        return list(response.container_responses[0].deviceIDs)

    def allocate_ids(self, resource: str, ids: Sequence[str]) -> Any:
        """Allocate exactly `ids` for one container; the ContainerAllocateResponse."""
        request = pb.AllocateRequest(
            container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)]
        )
        response = self.plugins[resource].stub.Allocate(request, timeout=10)
        return response.container_responses[0]

    def allocate(self, resource: str, count: int) -> tuple[list[str], Any]:
        """Pod admission for one container asking for `count` of `resource`: (ids, response)."""
        plugin = self.plugins[resource]
        free = [i for i in self.healthy(resource) if i not in plugin.allocated]
        if len(free) < count:
            raise AssertionError(f"{resource}: {count} asked, {len(free)} free")
        if plugin.options.get_preferred_allocation_available:
            ids = self.preferred(resource, free, [], count)
        else:
            ids = free[:count]
        response = self.allocate_ids(resource, ids)
        plugin.allocated.update(ids)
        return ids, response

    def release(self, resource: str, ids: Sequence[str]) -> None:
        """The pod is gone."""
        self.plugins[resource].allocated.difference_update(ids)


def plugin_sockets(directory: Path) -> list[str]:
    """Socket files in the device-plugins directory other than kubelet.sock."""
    return sorted(p for p in os.listdir(directory) if p.endswith(".sock") and p != "kubelet.sock")
