"""NVML events through the real pynvml, injected while the process (or another one) waits.

The calls are the ones NVIDIA's k8s-device-plugin makes for health checks: one event set over
every GPU, GetSupportedEventTypes + RegisterEvents per GPU, Wait in a loop, Free.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pynvml
import pytest
from gpu_cdi_fakehost.events import EventError, EventInjector
from gpu_cdi_fakehost.pytest_plugin import FakeHostFactory

XID = pynvml.nvmlEventTypeXidCriticalError
SBE = pynvml.nvmlEventTypeSingleBitEccError
DBE = pynvml.nvmlEventTypeDoubleBitEccError
HEALTH_MASK = XID | SBE | DBE  # what NVIDIA's device plugin registers
NO_INSTANCE = 0xFFFFFFFF
# Long enough never to expire on a loaded machine: these tests wait for an event known to come.
WAIT_MS = 20_000


def addr(handle: Any) -> int | None:
    """A device handle's identity (pynvml hands out ctypes pointers)."""
    return ctypes.cast(handle, ctypes.c_void_p).value


def health_set(gpus: range | list[int], mask: int = HEALTH_MASK) -> Any:
    """The device plugin's event set: `mask` (as far as supported) on each GPU."""
    s = pynvml.nvmlEventSetCreate()
    for i in gpus:
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        pynvml.nvmlDeviceRegisterEvents(h, mask & pynvml.nvmlDeviceGetSupportedEventTypes(h), s)
    return s


def wait(s: Any, timeout_ms: int = WAIT_MS) -> tuple[int | None, int, int, int, int]:
    """(device handle address, eventType, eventData, gpuInstanceId, computeInstanceId)."""
    e = pynvml.nvmlEventSetWait_v2(s, timeout_ms)
    return addr(e.device), e.eventType, e.eventData, e.gpuInstanceId, e.computeInstanceId


def gpu(i: int) -> int | None:
    return addr(pynvml.nvmlDeviceGetHandleByIndex(i))


def test_supported_event_types(nvml_init: FakeHostFactory) -> None:
    nvml_init("dgx-a100-mig")
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceGetSupportedEventTypes(h) == (
        XID | SBE | DBE | pynvml.nvmlEventTypePState | pynvml.nvmlEventTypeClock
    )
    mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
    # NVML reports events per GPU (with GI/CI ids), not on MIG device handles
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetSupportedEventTypes(mig)
    s = pynvml.nvmlEventSetCreate()
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceRegisterEvents(mig, XID, s)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlDeviceRegisterEvents(h, 1 << 40, s)
    pynvml.nvmlEventSetFree(s)


def test_no_ecc_events_without_ecc(nvml_init: FakeHostFactory) -> None:
    nvml_init("workstation")  # an RTX A6000: ECC off
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert not pynvml.nvmlDeviceGetSupportedEventTypes(h) & (SBE | DBE)
    s = pynvml.nvmlEventSetCreate()
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceRegisterEvents(h, HEALTH_MASK, s)
    pynvml.nvmlDeviceRegisterEvents(h, XID, s)
    pynvml.nvmlEventSetFree(s)


def test_xid_on_gpu_and_on_mig_device(nvml_init: FakeHostFactory) -> None:
    host = nvml_init("dgx-a100-mig")
    s = health_set(range(8))
    host.events.xid(3, 48)
    assert wait(s) == (gpu(3), XID, 48, NO_INSTANCE, NO_INSTANCE)
    # MIG device 1:2 is GI 2 / CI 1 of GPU 1; the event names the parent GPU
    host.events.xid("1:2", 94)
    assert wait(s) == (gpu(1), XID, 94, 2, 1)
    host.events.xid("MIG-c3a39de5-8dae-504a-ac91-63da6e04b5db", 63)  # GPU 0, GI 1, CI 0
    assert wait(s) == (gpu(0), XID, 63, 1, 0)
    host.events.xid(0, 31, gi=13, ci=0)
    assert wait(s) == (gpu(0), XID, 31, 13, 0)
    host.events.ecc(5, double_bit=True)
    assert wait(s) == (gpu(5), DBE, 0, NO_INSTANCE, NO_INSTANCE)
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait_v2(s, 0)
    pynvml.nvmlEventSetFree(s)


def test_only_registered_gpus_types_and_later_events(nvml_init: FakeHostFactory) -> None:
    host = nvml_init("dgx-a100")
    host.events.xid(2, 13)  # before the set exists: never delivered
    s = health_set([2], mask=XID)
    host.events.xid(4, 13)  # GPU 4 is registered later: this one predates it
    host.events.ecc(2)  # only XIDs registered on GPU 2
    host.events.xid(1, 13)  # GPU 1 is not registered
    pynvml.nvmlDeviceRegisterEvents(pynvml.nvmlDeviceGetHandleByIndex(4), XID, s)
    host.events.xid(4, 45)
    host.events.xid(2, 43)
    assert wait(s)[:3] == (gpu(4), XID, 45)
    assert wait(s)[:3] == (gpu(2), XID, 43)
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait_v2(s, 50)
    pynvml.nvmlEventSetFree(s)


def test_wait_wakes_up_for_an_event_appended_while_waiting(nvml_init: FakeHostFactory) -> None:
    host = nvml_init("dgx-a100")
    s = health_set(range(8))
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(wait(s)))
    waiter.start()
    time.sleep(0.2)  # let it block in the library (ctypes releases the GIL)
    assert not got
    host.events.xid(6, 79)
    waiter.join(WAIT_MS / 1000)
    assert got == [(gpu(6), XID, 79, NO_INSTANCE, NO_INSTANCE)]
    pynvml.nvmlEventSetFree(s)


def test_every_set_sees_every_event(nvml_init: FakeHostFactory) -> None:
    host = nvml_init("dgx-a100")
    a, b = health_set(range(8)), health_set(range(8))
    host.events.xid(0, 48)
    assert wait(a)[2] == wait(b)[2] == 48
    pynvml.nvmlEventSetFree(a)
    pynvml.nvmlEventSetFree(b)


_WAITER = """
import json, sys, pynvml
pynvml.nvmlInit()
s = pynvml.nvmlEventSetCreate()
for i in range(pynvml.nvmlDeviceGetCount()):
    pynvml.nvmlDeviceRegisterEvents(pynvml.nvmlDeviceGetHandleByIndex(i), 8, s)
print("ready", flush=True)
e = pynvml.nvmlEventSetWait_v2(s, int(sys.argv[1]))
print(json.dumps([pynvml.nvmlDeviceGetUUID(e.device), e.eventData, e.gpuInstanceId]))
"""


def test_another_process_waiting_gets_the_event(fakehost: FakeHostFactory) -> None:
    """Injection reaches a process that loaded the library before the event was written."""
    host = fakehost("dgx-a100-mig")
    env = {**os.environ, **host.env, "LD_LIBRARY_PATH": str(host.lib_dir)}
    with subprocess.Popen(
        [sys.executable, "-c", _WAITER, str(WAIT_MS)], env=env, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        host.events.xid("0:3", 48)
        out, _ = child.communicate(timeout=WAIT_MS / 1000)
    assert child.returncode == 0
    assert json.loads(out) == [host.topology.gpus[0].uuid, 48, 14]


def test_lost_gpu_fails_every_call_until_recovered(nvml_init: FakeHostFactory) -> None:
    host = nvml_init("dgx-a100-mig")
    h1 = pynvml.nvmlDeviceGetHandleByIndex(1)
    mig_uuid = host.topology.gpus[1].mig_devices[0].uuid
    s = health_set(range(8))
    uuid1 = host.topology.gpus[1].uuid
    assert host.events.lose(1).splitlines() == [f"xid {uuid1} 79", f"lost {uuid1}"]
    # the driver's XID 79 arrives; the GPU it names no longer answers
    assert wait(s)[:3] == (addr(h1), XID, 79)
    for call in (
        lambda: pynvml.nvmlDeviceGetUUID(h1),
        lambda: pynvml.nvmlDeviceGetHandleByIndex(1),
        lambda: pynvml.nvmlDeviceGetHandleByUUID(mig_uuid),
        lambda: pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h1, 0),
        lambda: pynvml.nvmlDeviceGetSupportedEventTypes(h1),
    ):
        with pytest.raises(pynvml.NVMLError_GpuIsLost):
            call()
    assert pynvml.nvmlDeviceGetCount() == 8  # it is still enumerated, as on a real host
    assert pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(2)).startswith("GPU-")
    host.events.recover(1)
    assert pynvml.nvmlDeviceGetUUID(h1) == uuid1
    pynvml.nvmlEventSetFree(s)


def test_lost_gpu_is_lost_for_processes_started_later(fakehost: FakeHostFactory) -> None:
    host = fakehost("dgx-a100")
    host.events.lose(7, xid=None)
    env = {**os.environ, **host.env, "LD_LIBRARY_PATH": str(host.lib_dir)}
    code = (
        "import pynvml; pynvml.nvmlInit()\n"
        "try:\n    pynvml.nvmlDeviceGetHandleByIndex(7)\n"
        "except pynvml.NVMLError_GpuIsLost:\n    print('lost')\n"
        "print(pynvml.nvmlDeviceGetHandleByIndex(6) is not None)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["lost", "True"]


def test_wait_itself_fails(nvml_init: FakeHostFactory) -> None:
    host = nvml_init("dgx-a100")
    s = health_set(range(8))
    host.events.fail_wait("UNKNOWN")
    host.events.xid(0, 48)
    with pytest.raises(pynvml.NVMLError_Unknown):
        pynvml.nvmlEventSetWait_v2(s, WAIT_MS)
    # one failure per injected line; the events behind it still come
    assert wait(s)[2] == 48
    host.events.fail_wait(15)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlEventSetWait(s, WAIT_MS)  # the legacy entry point reads the same stream
    pynvml.nvmlEventSetFree(s)


def test_wait_failure_from_an_error_rule(nvml_init: FakeHostFactory) -> None:
    rule = {"call": "nvmlEventSetWait", "error": "GPU_IS_LOST", "times": 1}
    host = nvml_init("dgx-a100", errors=[rule])
    s = health_set(range(8))
    host.events.xid(0, 48)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlEventSetWait_v2(s, WAIT_MS)
    assert wait(s)[2] == 48
    pynvml.nvmlEventSetFree(s)


def test_freed_set_and_shutdown_while_waiting(fake_nvml: FakeHostFactory) -> None:
    fake_nvml("dgx-a100")
    pynvml.nvmlInit()
    s = health_set(range(8))
    pynvml.nvmlEventSetFree(s)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlEventSetFree(s)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        pynvml.nvmlEventSetWait_v2(s, 10)
    s = health_set(range(8))
    errors: list[Exception] = []

    def waiter() -> None:
        try:
            pynvml.nvmlEventSetWait_v2(s, WAIT_MS)
        except pynvml.NVMLError as e:
            errors.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    pynvml.nvmlShutdown()
    t.join(WAIT_MS / 1000)
    assert [type(e) for e in errors] == [pynvml.NVMLError_Uninitialized]


def test_malformed_lines_are_reported_and_skipped(
    nvml_init: FakeHostFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    host = nvml_init("dgx-a100")
    s = health_set(range(8))
    with host.events_file.open("a") as f:
        f.write("xid GPU-00000000-0000-0000-0000-000000000000 48\nmeteor strike\n")
    host.events.xid(1, 48)
    assert wait(s)[2] == 48
    pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(0))  # a device call scans the file
    err = capfd.readouterr().err
    assert f"{host.events_file}: byte 0: no device with this UUID" in err
    assert "unknown event: 'meteor strike' (ignored)" in err
    pynvml.nvmlEventSetFree(s)


def test_a_partial_line_waits_for_its_end(nvml_init: FakeHostFactory) -> None:
    host = nvml_init("dgx-a100")
    s = health_set(range(8))
    uuid = host.topology.gpus[0].uuid
    with host.events_file.open("a") as f:
        f.write(f"xid {uuid} 4")
    with pytest.raises(pynvml.NVMLError_Timeout):
        pynvml.nvmlEventSetWait_v2(s, 50)
    with host.events_file.open("a") as f:
        f.write("8\n")
    assert wait(s)[2] == 48
    pynvml.nvmlEventSetFree(s)


@pytest.mark.parametrize(
    ("inject", "message"),
    [
        (lambda e: e.xid(8, 48), "no GPU 8 on dgx-a100-mig (it has 8)"),
        (lambda e: e.xid("2:0", 48), "no MIG device 2:0 on dgx-a100-mig (GPU 2 has 0)"),
        (lambda e: e.xid("GPU-x", 48), "GPU-x: no such GPU or MIG device on dgx-a100-mig"),
        (lambda e: e.xid("first", 48), "'first': expected a GPU index, GPU:MIG index or UUID"),
        (lambda e: e.xid(0, 48, gi=1), "give both gi and ci, or neither"),
        (lambda e: e.lose("0:1"), "0:1: a MIG device; a whole GPU is lost or recovered"),
        (lambda e: e.fail_wait("SUCCESS"), "SUCCESS is not an error"),
        (lambda e: e.fail_wait("BAD"), "expected an NVML error name like GPU_IS_LOST, got 'BAD'"),
    ],
)
def test_injector_refuses_what_the_host_lacks(
    fakehost: FakeHostFactory, inject: Any, message: str
) -> None:
    host = fakehost("dgx-a100-mig", device_nodes=False)
    with pytest.raises(EventError) as exc:
        inject(host.events)
    assert str(exc.value) == message
    assert host.events_file.read_text() == ""


def test_cli(fakehost: FakeHostFactory) -> None:
    host = fakehost("dgx-a100-mig", device_nodes=False)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "gpu_cdi_fakehost", "event", "--root", str(host.root)]
        return subprocess.run([*argv, *args], capture_output=True, text=True, check=False)

    ok = cli("xid", "1:1", "31")
    assert (ok.returncode, ok.stdout) == (
        0,
        f"xid {host.topology.gpus[1].mig_devices[1].uuid} 31\n",
    )
    assert cli("wait-error").stdout == "wait-error 999\n"
    bad = cli("xid", "9", "31")
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == "gpu-cdi-fakehost: no GPU 9 on " + str(host.root) + " (it has 8)\n"
    assert EventInjector.for_root(host.root) == EventInjector(
        host.events_file, host.events.gpus, str(host.root)
    )
    assert len(host.events_file.read_text().splitlines()) == 2


def test_events_file_that_is_a_fifo_is_reported_once(
    fake_nvml: FakeHostFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    host = fake_nvml("dgx-a100")
    host.events_file.unlink()
    os.mkfifo(host.events_file)
    pynvml.nvmlInit()
    try:
        s = health_set(range(8))
        with pytest.raises(pynvml.NVMLError_Timeout):
            pynvml.nvmlEventSetWait_v2(s, 10)
        pynvml.nvmlDeviceGetUUID(gpu_handle := pynvml.nvmlDeviceGetHandleByIndex(0))
        assert pynvml.nvmlDeviceGetUUID(gpu_handle).startswith("GPU-")
        pynvml.nvmlEventSetFree(s)
    finally:
        pynvml.nvmlShutdown()
    err = capfd.readouterr().err
    assert err.count(f"events file {host.events_file}: not a regular file (no events)") == 1
