"""The Stub and Plugin API against a runtime-side peer (tests/nri/fake_runtime.py) that speaks
the wire protocol over a real Unix socket."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from nri_plugin.protocol import Code, ConnectionClosed, Plugin, RpcError, Stub, api
from nri_plugin.protocol.stub import implemented_events
from tests.nri.fake_runtime import (
    NOT_SOCKETS,
    FakeRuntime,
    FakeRuntimeError,
    PluginConn,
    not_a_socket,
    sample_create_request,
)
from tests.nri.plugin_thread import PluginThread

REPO = Path(__file__).resolve().parents[2]


class Recorder(Plugin):
    """Records what it is called with; behaviour chosen by the container's name."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.synced: tuple[list[str], list[str]] | None = None

    async def synchronize(
        self, pods: Sequence[api.PodSandbox], containers: Sequence[api.Container]
    ) -> list[api.ContainerUpdate]:
        self.synced = ([p.id for p in pods], [c.id for c in containers])
        return [api.ContainerUpdate(container_id=c.id) for c in containers]

    async def create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.ContainerAdjustment | api.CreateContainerResponse | None:
        self.calls.append(("create", container.name))
        if container.name == "slow":
            await asyncio.sleep(0.3)
        if container.name == "hang":
            await asyncio.sleep(30)
        if container.name == "refuse":
            raise RpcError(Code.INVALID_ARGUMENT, "no GPU for you")
        if container.name == "crash":
            raise KeyError("boom")
        if container.name == "none":
            return None
        if container.name == "full":
            return api.CreateContainerResponse(evict=[api.ContainerEviction(container_id="x")])
        if container.name == "huge":  # more than ttrpc's 4 MiB
            return api.ContainerAdjustment(annotations={"huge": "x" * (5 << 20)})
        if container.name == "big":
            adjust = api.ContainerAdjustment()
            for i in range(800):
                adjust.env.add(key=f"BIG_{i}", value="v" * 20)
            return adjust
        adjust = api.ContainerAdjustment()
        adjust.env.add(key="SEEN", value=container.name)
        return adjust

    async def start_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        self.calls.append(("start", container.name))

    async def remove_pod_sandbox(self, pod: api.PodSandbox) -> None:
        self.calls.append(("remove_pod", pod.name))

    async def stop_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> list[api.ContainerUpdate]:
        return [api.ContainerUpdate(container_id="other", ignore_failure=True)]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[FakeRuntime]:
    rt = FakeRuntime(str(tmp_path / "nri.sock"))
    yield rt
    rt.close()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def connected(runtime: FakeRuntime, recorder: Recorder) -> Iterator[PluginConn]:
    with PluginThread(recorder, socket_path=runtime.path, name="rec", idx="42"):
        conn = runtime.accept()
        conn.handshake()
        yield conn


def create(conn: PluginConn, name: str, *, timeout: float = 2.0) -> api.CreateContainerRequest:
    req = api.CreateContainerRequest(
        pod=api.PodSandbox(id="pod1", name="pod"), container=api.Container(id=name, name=name)
    )
    return conn.call("CreateContainer", req.SerializeToString(), timeout=timeout)


def adjusted_env(answer: object) -> list[tuple[str, str]]:
    resp = api.CreateContainerResponse.FromString(answer.payload)  # type: ignore[attr-defined]
    return [(kv.key, kv.value) for kv in resp.adjust.env]


# -- registration, configuration, subscription ---------------------------------------------


def test_registers_configures_and_subscribes_to_implemented_events(
    runtime: FakeRuntime, recorder: Recorder
) -> None:
    with PluginThread(recorder, socket_path=runtime.path, name="rec", idx="42") as pt:
        conn = runtime.accept()
        reg = conn.wait_registered()
        assert (reg.plugin_name, reg.plugin_idx) == ("rec", "42")
        configured, _ = conn.handshake()
        # create (4), start (6), remove pod (3), stop container (10)
        assert configured.events == (1 << 3) | (1 << 5) | (1 << 2) | (1 << 9)
        assert pt.stub is not None and pt.stub.subscribed_mask == configured.events
    assert implemented_events(Plugin()) == []


def test_configure_override_is_limited_to_events_the_runtime_knows(runtime: FakeRuntime) -> None:
    class Greedy(Plugin):
        async def configure(self, request: api.ConfigureRequest) -> int:
            return 0xFFFF

    with PluginThread(Greedy(), socket_path=runtime.path):
        conn = runtime.accept()
        configured, _ = conn.handshake()
        assert configured.events == 0x7FF  # NRI 0.6.1 fails Configure on any higher bit


def test_configure_is_served_before_register_plugin_is_answered(runtime: FakeRuntime) -> None:
    with PluginThread(Recorder(), socket_path=runtime.path):
        conn = runtime.accept()
        # Read RegisterPlugin off the wire without answering it, then call Configure.
        deadline = time.monotonic() + 5
        conn.register_status = (0, "")
        while not conn.frames:
            conn._read_some(deadline)
        ans = conn.call("Configure", api.ConfigureRequest().SerializeToString())
        assert ans.code == 0 and api.ConfigureResponse.FromString(ans.payload).events


def test_synchronize_collects_split_state_and_answers_on_the_last_part(
    runtime: FakeRuntime, recorder: Recorder
) -> None:
    parts = [
        api.SynchronizeRequest(
            pods=[api.PodSandbox(id="p1")], containers=[api.Container(id="c1")], more=True
        ),
        api.SynchronizeRequest(pods=[api.PodSandbox(id="p2")], containers=[api.Container(id="c2")]),
    ]
    with PluginThread(recorder, socket_path=runtime.path) as pt:
        conn = runtime.accept()
        _, synced = conn.handshake(sync=parts)
        assert synced[0].more and not synced[0].update
        assert [u.container_id for u in synced[1].update] == ["c1", "c2"]
        assert recorder.synced == (["p1", "p2"], ["c1", "c2"])
        assert pt.stub is not None
        assert pt.run_coro(asyncio.wait_for(pt.stub.synchronized.wait(), 1)) is True


# -- events ---------------------------------------------------------------------------------


def test_create_container_adjustment(connected: PluginConn) -> None:
    assert adjusted_env(create(connected, "c1")) == [("SEEN", "c1")]
    none = create(connected, "none")
    assert none.code == 0 and none.payload == b""
    full = api.CreateContainerResponse.FromString(create(connected, "full").payload)
    assert [e.container_id for e in full.evict] == ["x"]


def test_realistic_request_spans_two_frames_and_big_reply_is_split(
    connected: PluginConn,
) -> None:
    req = sample_create_request(4400)
    data = req.SerializeToString()
    assert len(data) + 10 + 80 > 4096  # containerd sends this as two mux frames
    ans = connected.call("CreateContainer", data)
    assert adjusted_env(ans) == [("SEEN", req.container.name)]
    big = create(connected, "big")
    assert len(api.CreateContainerResponse.FromString(big.payload).adjust.env) == 800
    assert max(length for _, length in connected.frames) <= 4096
    assert sum(1 for _, length in connected.frames if length == 4096) >= 5


def test_handler_errors_fail_only_that_call(connected: PluginConn, recorder: Recorder) -> None:
    refused = create(connected, "refuse")
    assert (refused.code, refused.message) == (Code.INVALID_ARGUMENT, "no GPU for you")
    crashed = create(connected, "crash")
    assert crashed.code == Code.UNKNOWN and "boom" in crashed.message
    assert adjusted_env(create(connected, "after")) == [("SEEN", "after")]


def test_a_request_larger_than_the_receive_buffer_is_read_whole(connected: PluginConn) -> None:
    # the transport reads into one 64 KiB buffer: a 300 kB request takes several reads
    req = sample_create_request(300_000)
    req.container.name = "bulky"
    assert len(req.SerializeToString()) > 4 * 64 * 1024
    answer = connected.call("CreateContainer", req.SerializeToString())
    assert adjusted_env(answer) == [("SEEN", "bulky")]


def test_oversized_answer_becomes_resource_exhausted(connected: PluginConn) -> None:
    huge = create(connected, "huge")
    assert huge.code == Code.RESOURCE_EXHAUSTED and "limit of 4194304" in huge.message
    assert adjusted_env(create(connected, "small")) == [("SEEN", "small")]


def test_unknown_methods_and_services_are_unimplemented(connected: PluginConn) -> None:
    ans = connected.call("RunPodSandbox", b"")
    assert (ans.code, ans.message) == (Code.UNIMPLEMENTED, "method RunPodSandbox")
    sid = connected.request("Configure", b"", service="nri.pkg.api.v1alpha1.Other")
    ans = connected.wait_answer(sid)
    assert (ans.code, ans.message) == (Code.UNIMPLEMENTED, "service nri.pkg.api.v1alpha1.Other")


def test_undecodable_payload_is_invalid_argument(connected: PluginConn) -> None:
    ans = connected.call("CreateContainer", b"\xff\xff")
    assert ans.code == Code.INVALID_ARGUMENT and "CreateContainer" in ans.message


def test_deadline_is_honoured(connected: PluginConn) -> None:
    start = time.monotonic()
    ans = create(connected, "hang", timeout=0.2)
    assert ans.code == Code.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 2
    assert adjusted_env(create(connected, "next")) == [("SEEN", "next")]


def test_concurrent_requests_are_answered_by_stream_id(connected: PluginConn) -> None:
    reqs = {
        name: connected.request(
            "CreateContainer",
            api.CreateContainerRequest(container=api.Container(name=name)).SerializeToString(),
        )
        for name in ("slow", "fast1", "fast2")
    }
    answers = {name: connected.wait_answer(sid) for name, sid in reqs.items()}
    assert {n: adjusted_env(a) for n, a in answers.items()} == {n: [("SEEN", n)] for n in reqs}
    assert connected.arrivals[-1] == reqs["slow"]  # answered last, matched by id


def test_state_change_dispatch(connected: PluginConn, recorder: Recorder) -> None:
    pod, ctr = api.PodSandbox(name="p"), api.Container(name="c")
    for event in (api.START_CONTAINER, api.REMOVE_POD_SANDBOX, api.POST_START_CONTAINER):
        msg = api.StateChangeEvent(event=event, pod=pod, container=ctr)
        ans = connected.call("StateChange", msg.SerializeToString())
        assert (ans.code, ans.payload) == (0, b"")
    assert recorder.calls == [("start", "c"), ("remove_pod", "p")]


def test_stop_and_update_container_replies(connected: PluginConn) -> None:
    ans = connected.call("StopContainer", api.StopContainerRequest().SerializeToString())
    assert api.StopContainerResponse.FromString(ans.payload).update[0].container_id == "other"
    ans = connected.call("UpdateContainer", api.UpdateContainerRequest().SerializeToString())
    assert ans.code == 0 and api.UpdateContainerResponse.FromString(ans.payload).update == []
    ans = connected.call("Shutdown", b"")
    assert ans.code == 0


def test_bad_stream_id_is_rejected_and_connection_survives(connected: PluginConn) -> None:
    body = api.ConfigureRequest().SerializeToString()
    connected.send_ttrpc(1, connected.ttrpc_frame(1000, 1, b""))  # even id
    ans = connected.wait_answer(1000)
    assert ans.code == Code.INVALID_ARGUMENT and "odd" in ans.message
    assert connected.call("Configure", body).code == 0


def test_update_containers_from_the_plugin(runtime: FakeRuntime) -> None:
    with PluginThread(Recorder(), socket_path=runtime.path) as pt:
        conn = runtime.accept()
        conn.handshake()
        assert pt.stub is not None
        fut = asyncio.run_coroutine_threadsafe(
            pt.stub.update_containers([api.ContainerUpdate(container_id="c9")]), pt.loop
        )
        deadline = time.monotonic() + 5
        while not conn.updates:
            conn._read_some(deadline)
        assert conn.updates[0].update[0].container_id == "c9"
        assert fut.result(5).failed == []


# -- connection lifecycle -------------------------------------------------------------------


def test_reconnects_after_the_runtime_goes_away(runtime: FakeRuntime, recorder: Recorder) -> None:
    with PluginThread(recorder, socket_path=runtime.path, min_backoff=0.05) as pt:
        conn = runtime.accept()
        conn.handshake()
        conn.close()  # containerd restarts: EOF, never a Shutdown call
        conn2 = runtime.accept()
        conn2.handshake()
        assert adjusted_env(create(conn2, "again")) == [("SEEN", "again")]
        assert pt.stub is not None and pt.stub.connections == 2


def test_waits_for_the_socket_to_appear(
    tmp_path: Path, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "late.sock")
    with PluginThread(recorder, socket_path=path, min_backoff=0.05, max_backoff=0.1):
        time.sleep(0.5)  # several attempts
        rt = FakeRuntime(path)
        try:
            rt.accept().handshake()
        finally:
            rt.close()
    # one warning saying what to check, not one line per attempt
    waits = [r for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(waits) == 1 and waits[0].levelname == "WARNING"
    assert f"cannot connect to {path}: No such file or directory" in waits[0].getMessage()
    assert "running with NRI enabled" in waits[0].getMessage()


def test_repeated_failures_are_logged_again_only_after_a_while(
    tmp_path: Path,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nri_plugin.protocol import stub as stub_mod

    monkeypatch.setattr(stub_mod._FailureLog, "NOTE_SECONDS", 0.3)
    path = str(tmp_path / "none.sock")
    with PluginThread(recorder, socket_path=path, min_backoff=0.02, max_backoff=0.02):
        time.sleep(1.0)  # ~50 attempts
    lines = [r.getMessage() for r in caplog.records if "none.sock" in r.getMessage()]
    assert 2 <= len(lines) <= 5, lines
    assert "still retrying after" in lines[1]


@pytest.mark.parametrize("kind", NOT_SOCKETS)
def test_a_socket_path_that_is_not_a_socket_is_an_error(tmp_path: Path, kind: str) -> None:
    path = not_a_socket(tmp_path, kind)
    with PluginThread(Recorder(), socket_path=str(path), min_backoff=0.05) as pt:
        assert pt.join(5)
    assert isinstance(pt.error, ConnectionClosed)
    assert str(pt.error) == (
        f"50-test: {path} is {'a directory' if kind == 'directory' else 'not a socket'}, "
        "not the runtime's NRI socket"
    )


class Picky(Plugin):
    """Acts only on containers carrying a marker; answers with pre-encoded bytes."""

    create_container_markers = (b"wants-it",)

    def __init__(self) -> None:
        self.seen: list[str] = []

    def create_container(self, pod: api.PodSandbox, container: api.Container) -> bytes:
        self.seen.append(container.name)
        adjust = api.ContainerAdjustment(env=[api.KeyValue(key="GOT", value=container.name)])
        return bytes(api.CreateContainerResponse(adjust=adjust).SerializeToString())


def test_requests_without_a_marker_are_answered_without_the_plugin(runtime: FakeRuntime) -> None:
    plugin = Picky()
    with PluginThread(plugin, socket_path=runtime.path):
        conn = runtime.accept()
        conn.handshake()
        plain = sample_create_request()
        answer = conn.call("CreateContainer", plain.SerializeToString())
        assert (answer.code, answer.payload) == (0, b"")
        marked = sample_create_request()
        marked.container.name = "c1"
        marked.container.annotations["wants-it"] = "yes"
        assert adjusted_env(conn.call("CreateContainer", marked.SerializeToString())) == [
            ("GOT", "c1")
        ]
        # garbage without a marker is not even decoded (nothing asked for)
        assert conn.call("CreateContainer", b"\xff\xff").code == 0
        assert plugin.seen == ["c1"]


def test_refused_registration_is_retried(runtime: FakeRuntime, recorder: Recorder) -> None:
    with PluginThread(recorder, socket_path=runtime.path, min_backoff=0.05):
        conn = runtime.accept()
        conn.register_status = (2, 'invalid plugin index "5", must be 2 digits')
        conn.wait_registered()
        conn.wait_closed()
        runtime.accept().handshake()


def test_protocol_error_drops_the_connection_then_reconnects(
    runtime: FakeRuntime, recorder: Recorder
) -> None:
    with PluginThread(recorder, socket_path=runtime.path, min_backoff=0.05):
        conn = runtime.accept()
        conn.handshake()
        conn.send_raw(struct.pack(">II", 1, (1 << 24) + 1))  # impossible mux frame
        conn.wait_closed()
        runtime.accept().handshake()


def test_stop_closes_the_connection(runtime: FakeRuntime, recorder: Recorder) -> None:
    pt = PluginThread(recorder, socket_path=runtime.path)
    with pt:
        conn = runtime.accept()
        conn.handshake()
        pt.stop()
        conn.wait_closed()
    with pytest.raises(FakeRuntimeError, match="no plugin connected"):
        runtime.accept(timeout=0.3)


def test_without_reconnect_run_raises(runtime: FakeRuntime, recorder: Recorder) -> None:
    with PluginThread(recorder, socket_path=runtime.path, reconnect=False) as pt:
        conn = runtime.accept()
        conn.handshake()
        conn.close()
        assert pt.join(5)
        assert isinstance(pt.error, ConnectionClosed)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "", "idx": "50"}, "plugin name ''"),
        ({"name": "a b", "idx": "50"}, "plugin name 'a b'"),
        ({"name": "ok", "idx": "5"}, "index '5'"),
        ({"name": "ok", "idx": None}, "index not given"),
        ({"name": "ok\n", "idx": "50"}, "invalid NRI plugin name 'ok"),
        ({"name": "ok", "idx": "50", "socket_path": ""}, "socket path is empty"),
        (
            {"name": "ok", "idx": "50", "environ": {"NRI_PLUGIN_SOCKET": "x"}},
            "NRI_PLUGIN_SOCKET='x'",
        ),
        ({"name": "ok", "idx": "50", "min_backoff": 0}, "backoff"),
    ],
)
def test_bad_options_are_reported(options: dict[str, object], message: str) -> None:
    options.setdefault("environ", {})
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Stub(Plugin(), **options)  # type: ignore[arg-type]


# -- as a process ---------------------------------------------------------------------------


def plugin_process(*args: str, **popen: object) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.update(popen.pop("env", {}))  # type: ignore[arg-type]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.nri.sample_plugin", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[call-overload]
    )


def test_sigterm_stops_cleanly(runtime: FakeRuntime) -> None:
    proc = plugin_process("--socket", runtime.path, "--mode", "adjust")
    try:
        conn = runtime.accept(timeout=20)
        conn.handshake()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        conn.wait_closed()
        assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.wait()


def test_preinstalled_plugin_uses_the_inherited_socket() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # containerd passes the socket as fd 3 and only these three variables
    proc = plugin_process(
        "--name",
        "ignored",
        "--idx",
        "99",
        env={
            "NRI_PLUGIN_SOCKET": str(theirs.fileno()),
            "NRI_PLUGIN_NAME": "pre",
            "NRI_PLUGIN_IDX": "07",
        },
        pass_fds=(theirs.fileno(),),
    )
    theirs.close()
    try:
        conn = PluginConn(ours)
        reg = conn.wait_registered(timeout=20)
        assert (reg.plugin_name, reg.plugin_idx) == ("pre", "07")
        conn.handshake()
        req = sample_create_request()
        assert conn.call("CreateContainer", req.SerializeToString()).code == 0
        conn.close()  # the runtime went away: a pre-installed plugin ends
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_unanswered_registration_times_out_and_retries(runtime: FakeRuntime) -> None:
    with PluginThread(
        Recorder(), socket_path=runtime.path, min_backoff=0.05, registration_timeout=0.2
    ):
        conn = runtime.accept()
        conn.answer_register = False
        conn.wait_registered()
        conn.wait_closed(timeout=3)  # gave up on this connection
        runtime.accept().handshake()


def test_pending_call_fails_when_the_connection_drops(runtime: FakeRuntime) -> None:
    with PluginThread(Recorder(), socket_path=runtime.path, min_backoff=2) as pt:
        conn = runtime.accept()
        conn.handshake()
        assert pt.stub is not None
        # the runtime goes away before it reads (and answers) UpdateContainers
        fut = asyncio.run_coroutine_threadsafe(
            pt.stub.update_containers([api.ContainerUpdate(container_id="c")]), pt.loop
        )
        conn.close()
        with pytest.raises(ConnectionClosed):
            fut.result(5)


class Gate(Plugin):
    """Holds every CreateContainer until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.ContainerAdjustment:
        self.entered += 1
        await self.release.wait()
        return api.ContainerAdjustment()


def test_requests_in_flight_are_bounded(runtime: FakeRuntime) -> None:
    from nri_plugin.protocol.transport import MAX_IN_FLIGHT

    gate = Gate()
    with PluginThread(gate, socket_path=runtime.path) as pt:
        conn = runtime.accept()
        conn.handshake()
        payload = api.CreateContainerRequest().SerializeToString()
        sids = [conn.request("CreateContainer", payload, timeout=30) for _ in range(300)]
        deadline = time.monotonic() + 5
        while gate.entered < MAX_IN_FLIGHT and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        assert gate.entered == MAX_IN_FLIGHT  # the rest waits (backlog, then the socket)
        pt.loop.call_soon_threadsafe(gate.release.set)
        answers = [conn.wait_answer(sid) for sid in sids]
        assert all(a.code == 0 for a in answers)
        assert gate.entered == 300


def test_stop_before_run_returns_at_once() -> None:
    stub = Stub(Plugin(), name="x", idx="01", socket_path="/nonexistent/nri.sock", environ={})
    stub.stop()
    asyncio.run(asyncio.wait_for(stub.run(), 1))
    assert stub.connections == 0


class SyncPlugin(Plugin):
    """Plain-def handlers: answered inline, without a task."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def configure(self, request: api.ConfigureRequest) -> int | None:
        return None

    def create_container(
        self, pod: api.PodSandbox, container: api.Container
    ) -> api.ContainerAdjustment:
        if container.name == "refuse":
            raise RpcError(Code.PERMISSION_DENIED, "not in this namespace")
        if container.name == "wrong":
            return "oops"  # type: ignore[return-value]
        adjust = api.ContainerAdjustment()
        adjust.env.add(key="SYNC", value=container.name)
        return adjust

    def start_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        self.started.append(container.name)


def test_plain_def_handlers_are_served_inline(runtime: FakeRuntime) -> None:
    plugin = SyncPlugin()
    with PluginThread(plugin, socket_path=runtime.path) as pt:
        conn = runtime.accept()
        configured, _ = conn.handshake()
        assert configured.events == (1 << 3) | (1 << 5)
        req = api.CreateContainerRequest(container=api.Container(name="s1"))
        ans = conn.call("CreateContainer", req.SerializeToString())
        resp = api.CreateContainerResponse.FromString(ans.payload)
        assert [(kv.key, kv.value) for kv in resp.adjust.env] == [("SYNC", "s1")]
        refused = create(conn, "refuse")
        assert (refused.code, refused.message) == (Code.PERMISSION_DENIED, "not in this namespace")
        wrong = create(conn, "wrong")
        assert wrong.code == Code.UNKNOWN and "expected ContainerAdjustment" in wrong.message
        event = api.StateChangeEvent(event=api.START_CONTAINER, container=api.Container(name="x"))
        assert conn.call("StateChange", event.SerializeToString()).code == 0
        assert plugin.started == ["x"]
        assert pt.stub is not None
        transport = pt.stub._transport
        assert transport is not None and transport.in_flight == 0
