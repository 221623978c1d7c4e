"""The health board, the XID policy and which devices an event hits."""

from __future__ import annotations

import ctypes
import threading
import time

import pytest

from device_plugin.config import ConfigError
from device_plugin.health import ALL_INSTANCES, SKIPPED_XIDS, Board, MigRef, XidPolicy, affected


def test_default_policy_skips_application_xids() -> None:
    policy = XidPolicy.from_env({})
    assert policy.enabled
    assert {13, 31, 43, 45, 68, 109} == SKIPPED_XIDS
    assert not any(policy.critical(x) for x in SKIPPED_XIDS)
    assert policy.critical(79) and policy.critical(48)


def test_policy_env() -> None:
    policy = XidPolicy.from_env(
        {"DP_DISABLE_HEALTHCHECKS": "79, 48", "DP_ENABLE_HEALTHCHECKS": "13"}
    )
    assert not policy.critical(79) and not policy.critical(48)
    assert policy.critical(13) and not policy.critical(31)
    assert not XidPolicy.from_env({"DP_DISABLE_HEALTHCHECKS": "all"}).enabled
    assert not XidPolicy.from_env({"DP_DISABLE_HEALTHCHECKS": "xids"}).critical(79)
    assert XidPolicy.from_env({"DP_ENABLE_HEALTHCHECKS": "xids"}).critical(13)
    with pytest.raises(ConfigError, match="DP_ENABLE_HEALTHCHECKS: '1x' is not an XID number"):
        XidPolicy.from_env({"DP_ENABLE_HEALTHCHECKS": "1x"})


def test_affected() -> None:
    migs = [MigRef("MIG-a", 1, 0), MigRef("MIG-b", 2, 0), MigRef("MIG-c", 2, 1)]
    assert affected("GPU-x", ALL_INSTANCES, ALL_INSTANCES, migs) == ["GPU-x"]
    assert affected("GPU-x", 2, 1, migs) == ["MIG-c"]
    assert affected("GPU-x", 2, ALL_INSTANCES, migs) == ["MIG-b", "MIG-c"]
    assert affected("GPU-x", 7, 0, migs) == ["GPU-x"]  # an instance we never saw: the GPU
    assert affected("GPU-x", 0, 0, []) == ["GPU-x"]


def test_board_causes_clear_one_by_one() -> None:
    board = Board()
    assert board.mark("GPU-x", "lost", "gone") is True
    assert board.mark("GPU-x", "xid", "XID 79") is False  # already unhealthy
    assert board.why("MIG-y", "GPU-x") == "gone; XID 79"
    assert board.clear("GPU-x", "lost") is False  # still the XID
    assert board.clear("GPU-x", "xid") is True
    assert board.why("GPU-x") is None
    assert board.clear("GPU-x", "xid") is False


def test_board_wakes_waiters_on_change() -> None:
    board = Board()
    version = board.version
    woke: list[float] = []

    def wait() -> None:
        start = time.monotonic()
        board.wait(version, 5.0)
        woke.append(time.monotonic() - start)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.1)
    board.mark("GPU-x", "xid", "XID 48")
    waiter.join(5)
    assert woke and woke[0] < 1.0
    assert board.wait(version, 0.01) == board.version != version


def test_the_watchers_nvml_structures_are_pynvmls() -> None:
    import pynvml

    from device_plugin import nvmlevents

    for ours, theirs in (
        (nvmlevents.EventData, pynvml.c_nvmlEventData_t),
        (nvmlevents.Memory, pynvml.c_nvmlMemory_t),
    ):
        assert [name for name, _ in ours._fields_] == [name for name, _ in theirs._fields_]
        assert ctypes.sizeof(ours) == ctypes.sizeof(theirs)
        for name, _ in ours._fields_:
            assert getattr(ours, name).offset == getattr(theirs, name).offset
            assert getattr(ours, name).size == getattr(theirs, name).size
    assert nvmlevents.TIMEOUT == pynvml.NVML_ERROR_TIMEOUT
    assert nvmlevents.NOT_SUPPORTED == pynvml.NVML_ERROR_NOT_SUPPORTED
    assert nvmlevents.FUNCTION_NOT_FOUND == pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
