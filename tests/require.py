"""Requirements of tests: skip on a developer machine, fail under GPU_CDI_REQUIRE_ALL=1 (CI)."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_ALL = os.environ.get("GPU_CDI_REQUIRE_ALL") == "1"


def need(ok: bool, why: str) -> None:
    """Skip (or, in CI, fail) the calling test unless `ok`; `why` says what is missing."""
    if ok:
        return
    if REQUIRE_ALL:
        pytest.fail(f"GPU_CDI_REQUIRE_ALL=1 but this test cannot run: {why}", pytrace=False)
    pytest.skip(why)


def need_root() -> None:
    """The test needs root (mknod, mounts, containerd)."""
    need(os.geteuid() == 0, "needs root")


def need_tool(name: str) -> str:
    """The test needs an executable on PATH; returns its path."""
    path = shutil.which(name)
    need(path is not None, f"needs {name} on PATH")
    assert path is not None
    return path
