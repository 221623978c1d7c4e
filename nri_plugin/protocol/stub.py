"""The NRI plugin stub: registration, event dispatch, reconnection. Like containerd's Go stub,
a plugin implements only the events it needs and the stub subscribes to exactly those.

    class Injector(Plugin):
        def create_container(self, pod, container):
            adjust = api.ContainerAdjustment()
            adjust.env.add(key="HELLO", value="world")
            return adjust

    run_plugin(Injector(), name="injector", idx="50")

A handler may be a coroutine (`async def`): it runs in its own task, cancelled when the
runtime's deadline (2 s by default) passes, and may await (blocking work belongs in
`asyncio.to_thread`). Or it may be a plain `def`: it then runs inline on the event loop, the
fastest path (no task, no extra loop turn), for work that never blocks. Raising
`RpcError(code, msg)` fails the one call (for CreateContainer: that container, with that
message at the CRI caller); any other exception is answered with code UNKNOWN and its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, TypeAlias, TypeVar, cast

from google.protobuf.message import DecodeError

from nri_plugin.protocol.errors import Code, ConnectionClosed, ProtocolError, RpcError
from nri_plugin.protocol.gen import api_pb2 as api
from nri_plugin.protocol.registration import (
    DEFAULT_SOCKET,
    ENV_IDX,
    ENV_NAME,
    ENV_SOCKET,
    idx_error,
    name_error,
)
from nri_plugin.protocol.transport import NriTransport, Reply
from nri_plugin.protocol.ttrpc import RequestReceived

log = logging.getLogger(__name__)

PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"
RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
REGISTRATION_TIMEOUT = 2.0
"""Seconds to wait for RegisterPlugin's answer (the Go stub's value)."""

# Plugin method -> NRI event number; the subscription bit of event n is 1 << (n - 1).
EVENT_METHODS: dict[str, int] = {
    "run_pod_sandbox": api.RUN_POD_SANDBOX,
    "stop_pod_sandbox": api.STOP_POD_SANDBOX,
    "remove_pod_sandbox": api.REMOVE_POD_SANDBOX,
    "create_container": api.CREATE_CONTAINER,
    "post_create_container": api.POST_CREATE_CONTAINER,
    "start_container": api.START_CONTAINER,
    "post_start_container": api.POST_START_CONTAINER,
    "update_container": api.UPDATE_CONTAINER,
    "post_update_container": api.POST_UPDATE_CONTAINER,
    "stop_container": api.STOP_CONTAINER,
    "remove_container": api.REMOVE_CONTAINER,
}
_STATE_CHANGE_METHODS = {event: name for name, event in EVENT_METHODS.items()}
EVENTS_NRI_0_6 = (1 << (api.LAST - 1)) - 1
"""Event bits every NRI runtime knows (0x7ff). A bit beyond them fails Configure on NRI 0.6.1,
and the later events (UpdatePodSandbox, ValidateContainerAdjustment) have no Plugin method."""


T = TypeVar("T")
MaybeAwaitable: TypeAlias = T | Awaitable[T]
"""What a Plugin method returns: the result, or (async def) an awaitable of it."""
Encoded: TypeAlias = bytes | Awaitable[bytes]


def then(result: MaybeAwaitable[T], encode: Callable[[T], bytes]) -> Encoded:
    """`encode(result)` now, or once `result` is awaited if it is awaitable."""
    if inspect.isawaitable(result):
        awaitable = result

        async def finish() -> bytes:
            return encode(await awaitable)

        return finish()
    return encode(result)


def event_mask(events: Sequence[int]) -> int:
    """Subscription mask of NRI event numbers."""
    mask = 0
    for event in events:
        mask |= 1 << (event - 1)
    return mask


class Plugin:
    """Base class of NRI plugins: override the methods of the events you handle.

    Only overridden event methods are subscribed to. Overrides may be `def` or `async def`
    (module docstring). `pod` is an `api.PodSandbox`, `container` an `api.Container`:
    protobuf messages of nri_plugin.protocol.gen.api_pb2, re-exported as
    `nri_plugin.protocol.api`.
    """

    def configure(self, request: api.ConfigureRequest) -> MaybeAwaitable[int | None]:
        """ConfigureRequest (config text, runtime name/version); return a mask to override."""
        return None

    def synchronize(
        self, pods: Sequence[api.PodSandbox], containers: Sequence[api.Container]
    ) -> MaybeAwaitable[Sequence[api.ContainerUpdate] | None]:
        """Existing pods and containers at connection; may return ContainerUpdates."""
        return None

    def shutdown(self) -> MaybeAwaitable[None]:
        """The runtime asks the plugin to stop (defined by NRI, not sent by containerd)."""

    def run_pod_sandbox(self, pod: api.PodSandbox) -> MaybeAwaitable[None]:
        """A pod sandbox is being started; an error fails RunPodSandbox."""

    def stop_pod_sandbox(self, pod: api.PodSandbox) -> MaybeAwaitable[None]:
        """A pod sandbox was stopped."""

    def remove_pod_sandbox(self, pod: api.PodSandbox) -> MaybeAwaitable[None]:
        """A pod sandbox was removed."""

    create_container_markers: tuple[bytes, ...] | None = None
    """If set, a CreateContainer request whose serialized form contains none of these byte
    strings is answered with no adjustment, without being decoded or handed to
    `create_container`: for plugins that act only on containers carrying certain annotation
    keys or environment variables (protobuf strings are their UTF-8 bytes on the wire)."""

    def create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> MaybeAwaitable[api.ContainerAdjustment | api.CreateContainerResponse | bytes | None]:
        """A container is being created: return an api.ContainerAdjustment, an
        api.CreateContainerResponse (adjustment plus updates/evictions), such a response
        already serialized (bytes, e.g. cached), or None."""
        return None

    def post_create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> MaybeAwaitable[None]:
        """A container was created."""

    def start_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> MaybeAwaitable[None]:
        """A container is being started; an error fails StartContainer."""

    def post_start_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> MaybeAwaitable[None]:
        """A container was started."""

    def update_container(
        self, pod: api.PodSandbox, container: api.Container, resources: api.LinuxResources
    ) -> MaybeAwaitable[Sequence[api.ContainerUpdate] | api.UpdateContainerResponse | None]:
        """A container's resources are being updated; may return ContainerUpdates or an
        api.UpdateContainerResponse."""
        return None

    def post_update_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> MaybeAwaitable[None]:
        """A container's resources were updated."""

    def stop_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> MaybeAwaitable[Sequence[api.ContainerUpdate] | None]:
        """A container was stopped; may return ContainerUpdates."""
        return None

    def remove_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> MaybeAwaitable[None]:
        """A container was removed."""


def implemented_events(plugin: Plugin) -> list[int]:
    """NRI events whose methods the plugin's class overrides, in event order."""
    cls = type(plugin)
    return sorted(
        event
        for name, event in EVENT_METHODS.items()
        if getattr(cls, name) is not getattr(Plugin, name)
    )


class _Ended(NamedTuple):
    """Why a connection ended (or never started)."""

    reason: str
    cannot_connect: bool = False


class _FailureLog:
    """Logs failures to connect or register without flooding the log while they repeat:
    a new failure at warning level (a failed connect with what to check), the same one again
    only every NOTE_SECONDS."""

    NOTE_SECONDS = 60.0

    def __init__(self, who: str) -> None:
        self._who = who
        self._reason = ""
        self._since = self._next = 0.0

    def clear(self) -> None:
        self._reason = ""

    def note(self, ended: _Ended) -> None:
        now = time.monotonic()
        if ended.reason != self._reason:
            self._reason, self._since, self._next = ended.reason, now, now + self.NOTE_SECONDS
            hint = (
                "; retrying (check that the runtime is running with NRI enabled and that this "
                "is its NRI socket)"
                if ended.cannot_connect
                else "; retrying"
            )
            log.warning("%s: %s%s", self._who, ended.reason, hint)
        elif now >= self._next:
            self._next = now + self.NOTE_SECONDS
            log.warning(
                "%s: still retrying after %.0fs: %s", self._who, now - self._since, ended.reason
            )


class Stub:
    """Connects a Plugin to the runtime and keeps it connected.

    External plugins (default): connect to `socket_path`, register as `idx-name`, and
    reconnect with capped exponential backoff whenever the runtime goes away. Pre-installed
    plugins (the runtime started us with NRI_PLUGIN_SOCKET/NAME/IDX in the environment) use
    the inherited socket, take name and index from the environment and end when it closes.
    """

    def __init__(
        self,
        plugin: Plugin,
        *,
        name: str | None = None,
        idx: str | None = None,
        socket_path: str | None = None,
        reconnect: bool = True,
        min_backoff: float = 0.1,
        max_backoff: float = 2.0,
        registration_timeout: float = REGISTRATION_TIMEOUT,
        environ: dict[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.plugin = plugin
        self._inherited_fd: int | None = None
        if env.get(ENV_SOCKET):
            try:
                self._inherited_fd = int(env[ENV_SOCKET])
            except ValueError:
                raise ValueError(
                    f"{ENV_SOCKET}={env[ENV_SOCKET]!r} from the runtime is not a file descriptor"
                ) from None
            name = env.get(ENV_NAME) or name
            idx = env.get(ENV_IDX) or idx
        if name is None or idx is None:
            raise ValueError(f"NRI plugin {'name' if name is None else 'index'} not given")
        why = name_error(name)
        if why is not None:
            raise ValueError(f"invalid NRI plugin name {name!r} ({why})")
        why = idx_error(idx)
        if why is not None:
            raise ValueError(f"invalid NRI plugin index {idx!r} ({why})")
        if socket_path == "":
            raise ValueError("the NRI socket path is empty")
        if not 0 < min_backoff <= max_backoff:
            raise ValueError(f"backoff must satisfy 0 < min ({min_backoff}) <= max ({max_backoff})")
        self.name = name
        self.idx = idx
        self.socket_path = DEFAULT_SOCKET if socket_path is None else socket_path
        self.endpoint = (
            self.socket_path
            if self._inherited_fd is None
            else f"fd {self._inherited_fd} (inherited from the runtime)"
        )
        """Where the runtime is, for messages: the socket path or the inherited descriptor."""
        self._preinstalled = self._inherited_fd is not None
        self.reconnect = reconnect and not self._preinstalled
        self._min_backoff = min_backoff
        self._registration_timeout = registration_timeout
        self._max_backoff = max_backoff
        self._events = implemented_events(plugin)
        self._transport: NriTransport | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._sync_pods: list[api.PodSandbox] = []
        self._sync_containers: list[api.Container] = []
        self.configured = asyncio.Event()
        """Set once the current connection is configured (cleared when it drops)."""
        self.synchronized = asyncio.Event()
        """Set once the current connection is synchronized (cleared when it drops)."""
        self.connections = 0
        """How many times a connection was registered (1 + reconnects)."""
        self.subscribed_mask = 0
        """Event mask sent in the last ConfigureResponse."""
        self._methods: dict[str, Callable[[bytes], Encoded]] = {
            "Configure": self._configure,
            "Synchronize": self._synchronize,
            "Shutdown": self._shutdown,
            "CreateContainer": self._create_container,
            "UpdateContainer": self._update_container,
            "StopContainer": self._stop_container,
            "StateChange": self._state_change,
        }

    @property
    def full_name(self) -> str:
        """`idx-name`, as the runtime names the plugin in logs and conflicts."""
        return f"{self.idx}-{self.name}"

    @property
    def preinstalled(self) -> bool:
        """Whether the runtime launched us with an inherited socket."""
        return self._preinstalled

    @property
    def peer_pid(self) -> int | None:
        """The runtime's pid, from the current connection (None without one, or unknown)."""
        return self._transport.peer_pid if self._transport is not None else None

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until `stop()`, or (pre-installed / reconnect=False) until the connection ends.

        Raises ConnectionClosed when a non-reconnecting stub loses or cannot get its connection.
        """
        self._stopping = asyncio.Event()
        if self._stop_requested:
            return
        backoff = self._min_backoff
        failures = _FailureLog(self.full_name)
        while not self._stopping.is_set():
            registered_before = self.connections
            ended = await self._run_connection()
            if self._stopping.is_set():
                return
            if not self.reconnect:
                if self.preinstalled and self.connections > registered_before:
                    return  # the runtime that launched us is gone: our work is done
                raise ConnectionClosed(f"{self.full_name}: {ended.reason}")
            if ended.cannot_connect:
                self._check_socket_path()
            if self.connections > registered_before:
                backoff = self._min_backoff
                failures.clear()
                log.info("%s: %s; reconnecting", self.full_name, ended.reason)
            else:
                failures.note(ended)
            self.configured.clear()
            self.synchronized.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, self._max_backoff)

    def _check_socket_path(self) -> None:
        """Raise ConnectionClosed if the socket path names something that is not a socket:
        waiting cannot help (nothing else creates a socket there while it exists)."""
        try:
            mode = os.stat(self.socket_path).st_mode
        except OSError:
            return  # missing (or not reachable): the runtime may still create it
        if not stat.S_ISSOCK(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a socket"
            raise ConnectionClosed(
                f"{self.full_name}: {self.socket_path} is {kind}, not the runtime's NRI socket"
            )

    def stop(self) -> None:
        """End `run()`: close the connection, cancel running handlers, do not reconnect."""
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()
        if self._transport is not None:
            self._transport.close()

    async def _run_connection(self) -> _Ended:
        """One connection: open, register, serve until it closes; returns why it ended."""
        try:
            transport = await self._open()
        except OSError as exc:
            return _Ended(
                f"cannot connect to {self.endpoint}: {exc.strerror or exc}", cannot_connect=True
            )
        self._transport = transport
        self._sync_pods, self._sync_containers = [], []
        assert self._stopping is not None
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        try:
            try:
                await transport.call(
                    RUNTIME_SERVICE,
                    "RegisterPlugin",
                    api.RegisterPluginRequest(
                        plugin_name=self.name, plugin_idx=self.idx
                    ).SerializeToString(),
                    self._registration_timeout,
                )
            except RpcError as exc:
                return _Ended(f"registration failed: {exc}")
            except ConnectionClosed as exc:
                return _Ended(str(exc))
            self.connections += 1
            log.info("%s: registered with the runtime", self.full_name)
            waiters: set[asyncio.Future[Any]] = {stop_wait, transport.closed}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if transport.closed.done():
                reason = transport.closed.result()
                return _Ended(f"connection closed by the runtime ({reason or 'EOF'})")
            return _Ended("stopped")
        finally:
            stop_wait.cancel()
            transport.close()
            await transport.wait_closed()
            self._transport = None

    async def _open(self) -> NriTransport:
        if self._inherited_fd is not None:
            fd, self._inherited_fd = self._inherited_fd, None  # usable once
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd)
            return await NriTransport.from_socket(sock, self._dispatch)
        return await NriTransport.connect(self.socket_path, self._dispatch)

    async def update_containers(
        self,
        updates: Sequence[api.ContainerUpdate],
        evictions: Sequence[api.ContainerEviction] = (),
    ) -> api.UpdateContainersResponse:
        """Ask the runtime to update or evict containers outside of an event; returns the
        api.UpdateContainersResponse (its `failed` lists updates that did not apply)."""
        if self._transport is None:
            raise ConnectionClosed("not connected to the runtime")
        req = api.UpdateContainersRequest(update=updates, evict=evictions)
        payload = await self._transport.call(
            RUNTIME_SERVICE, "UpdateContainers", req.SerializeToString(), REGISTRATION_TIMEOUT
        )
        return api.UpdateContainersResponse.FromString(payload)

    # -- dispatch ------------------------------------------------------------------------

    def _dispatch(self, req: RequestReceived) -> bytes | Reply | Awaitable[Reply]:
        if req.service != PLUGIN_SERVICE:
            return Reply(code=Code.UNIMPLEMENTED, message=f"service {req.service}")
        method = self._methods.get(req.method)
        if method is None:
            return Reply(code=Code.UNIMPLEMENTED, message=f"method {req.method}")
        try:
            result = method(req.payload)
        except Exception as exc:
            return self._error_reply(req.method, exc)
        if isinstance(result, bytes):
            return result  # the payload of a success
        return self._await_reply(req.method, result)

    async def _await_reply(self, method: str, result: Awaitable[bytes]) -> Reply:
        try:
            return Reply(await result)
        except Exception as exc:
            return self._error_reply(method, exc)

    def _error_reply(self, method: str, exc: Exception) -> Reply:
        if isinstance(exc, RpcError):
            # the handler chose this answer (and may have logged it)
            log.debug("%s: %s failed: %s", self.full_name, method, exc)
            return Reply(code=exc.code, message=exc.message)
        if isinstance(exc, DecodeError):
            error = RpcError(Code.INVALID_ARGUMENT, f"{method}: bad request: {exc}")
        else:
            log.error("%s: %s handler raised", self.full_name, method, exc_info=exc)
            error = RpcError(Code.UNKNOWN, str(exc) or type(exc).__name__)
        return Reply(code=error.code, message=error.message)

    def _configure(self, payload: bytes) -> Encoded:
        req = api.ConfigureRequest.FromString(payload)
        log.info("%s: configured by %s %s", self.full_name, req.runtime_name, req.runtime_version)

        def encode(override: int | None) -> bytes:
            mask = event_mask(self._events) if override is None else override
            self.subscribed_mask = mask & EVENTS_NRI_0_6
            self.configured.set()
            return bytes(api.ConfigureResponse(events=self.subscribed_mask).SerializeToString())

        return then(self.plugin.configure(req), encode)

    def _synchronize(self, payload: bytes) -> Encoded:
        req = api.SynchronizeRequest.FromString(payload)
        self._sync_pods.extend(req.pods)
        self._sync_containers.extend(req.containers)
        if req.more:
            # Newer runtimes split a large state; only the last part may carry updates.
            return bytes(api.SynchronizeResponse(more=True).SerializeToString())
        pods, containers = self._sync_pods, self._sync_containers
        self._sync_pods, self._sync_containers = [], []

        def encode(updates: Sequence[api.ContainerUpdate] | None) -> bytes:
            self.synchronized.set()
            return bytes(api.SynchronizeResponse(update=updates or ()).SerializeToString())

        return then(self.plugin.synchronize(pods, containers), encode)

    def _shutdown(self, payload: bytes) -> Encoded:
        return then(self.plugin.shutdown(), _empty)

    def _create_container(self, payload: bytes) -> Encoded:
        markers = self.plugin.create_container_markers
        if markers is not None:
            for marker in markers:
                if marker in payload:
                    break
            else:
                return b""
        req = api.CreateContainerRequest.FromString(payload)
        result = self.plugin.create_container(req.pod, req.container)
        if isinstance(result, bytes):  # (e.g. cached): nothing to await or encode
            return result
        return then(cast("MaybeAwaitable[Created]", result), _encode_create)

    def _update_container(self, payload: bytes) -> Encoded:
        req = api.UpdateContainerRequest.FromString(payload)
        result = self.plugin.update_container(req.pod, req.container, req.linux_resources)
        return then(result, _encode_update)

    def _stop_container(self, payload: bytes) -> Encoded:
        req = api.StopContainerRequest.FromString(payload)
        return then(
            self.plugin.stop_container(req.pod, req.container),
            lambda updates: bytes(
                api.StopContainerResponse(update=updates or ()).SerializeToString()
            ),
        )

    def _state_change(self, payload: bytes) -> Encoded:
        req = api.StateChangeEvent.FromString(payload)
        name = _STATE_CHANGE_METHODS.get(req.event)
        if name is None or req.event not in self._events:
            return b""  # not subscribed (a zero mask means "all"): nothing to do
        handler = getattr(self.plugin, name)
        if name.endswith("pod_sandbox"):
            return then(handler(req.pod), _empty)
        return then(handler(req.pod, req.container), _empty)


def _empty(_: object) -> bytes:
    return b""


Created: TypeAlias = api.ContainerAdjustment | api.CreateContainerResponse | bytes | None
"""What create_container returns (awaited)."""


def _encode_create(result: Created) -> bytes:
    if result is None:
        return b""
    if isinstance(result, bytes):
        return result
    if isinstance(result, api.CreateContainerResponse):
        return bytes(result.SerializeToString())
    if isinstance(result, api.ContainerAdjustment):
        return bytes(api.CreateContainerResponse(adjust=result).SerializeToString())
    raise TypeError(
        f"create_container returned {type(result).__name__}; expected ContainerAdjustment, "
        "CreateContainerResponse or None"
    )


def _encode_update(
    result: Sequence[api.ContainerUpdate] | api.UpdateContainerResponse | None,
) -> bytes:
    if isinstance(result, api.UpdateContainerResponse):
        return bytes(result.SerializeToString())
    return bytes(api.UpdateContainerResponse(update=result or ()).SerializeToString())


def run_plugin(plugin: Plugin, **stub_options: Any) -> int:
    """Run `plugin` until SIGTERM/SIGINT (or, pre-installed, until the runtime goes away).

    Returns a process exit status: 0 after a signal or a clean end, 1 if the connection
    could not be kept.
    """

    async def main() -> int:
        stub = Stub(plugin, **stub_options)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stub.stop)
        try:
            await stub.run()
        except ConnectionClosed as exc:
            log.error("%s", exc)
            return 1
        except ProtocolError as exc:
            log.error("%s: %s", stub.full_name, exc)
            return 1
        return 0

    return asyncio.run(main())
