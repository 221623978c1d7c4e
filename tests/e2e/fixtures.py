"""pytest fixtures for a real containerd 1.7 with NRI + CDI (registered in tests/conftest.py).

Fixtures
--------
containerd (session)
    A started `tests.e2e.harness.Containerd` with the default `ContainerdConfig`: NRI on
    (external socket `.nri_socket`, pre-installed plugins from `.plugin_dir`, configs from
    `.conf_dir`), CDI on with `cdi_spec_dirs = [.cdi_dir]`, root/state on tmpfs, the busybox
    image `.image` imported. Shared by all tests: write CDI specs under a unique file name,
    do not leave plugins in `.plugin_dir`, and do not restart it with a different config (use
    `containerd_factory` for that). `.restart()` (same config) is fine.
containerd_factory (function)
    `containerd_factory(**overrides) -> Containerd`: a fresh, started private containerd;
    overrides are `ContainerdConfig` fields, e.g. `enable_cdi=False`, `nri=False`,
    `plugin_request_timeout="500ms"`. Pass `start=False` to get it unstarted (e.g. to
    `install_plugin(...)` first, then `.start()`). All are closed at the end of the test.
cri (function)
    A `tests.e2e.cri.CriClient` on the session `containerd`; every pod/container it made is
    removed at the end of the test. `cri.run_pod(name) -> pod_id`, `cri.run(pod_id, name,
    command, **kw) -> Run(container_id, exit_code, logs, spec)`, `cri.create_container(...)`,
    `cri.start/wait/logs/oci_spec/remove_container/remove_pod`. Failed CRI calls raise
    `tests.e2e.cri.CriError` (`.code`, `.details` = containerd's message).

Containerd API (tests/e2e/harness.py): `.address`, `.nri_socket`, `.cdi_dir`, `.plugin_dir`,
`.conf_dir`, `.log_path`, `.logs_dir`, `.base`, `.image` (default busybox ref), `.config`,
`.root_on_tmpfs`, `.running`, `.pid`; `.start()`, `.stop()`, `.restart(**overrides)`,
`.close()`; `.build_image(ref, extra_files={path: content | (content, mode)},
symlinks={path: target}, dirs=[...]) -> ref`; `.install_plugin(idx, name, file_or_script,
config=None)`, `.install_plugin_command(idx, name, argv, env=..., config=...)` +
`.plugin_log(name)` (pre-installed plugins; take effect on start/restart);
`.wait_plugin_connected(name, since=.log_size())` (external plugin registered and synced);
`.wait_for_log(regex, timeout, since)`, `.log_text()`, `.log_tail()`; `.ctr(*args)`;
`.cri() -> CriClient` (close it or use `with`).

All of them skip without root or without the packages of tests/e2e/install.sh, and fail
instead under GPU_CDI_REQUIRE_ALL=1 (CI).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e import paths
from tests.require import need, need_root


def require_containerd() -> None:
    """Skip (fail in CI) unless this process is root and the harness packages are installed."""
    need_root()
    msg = paths.missing_message()
    need(msg is None, msg or "")


@pytest.fixture(scope="session")
def containerd() -> Iterator[Any]:
    """Session-wide private containerd with NRI and CDI enabled (see module docstring)."""
    require_containerd()
    from tests.e2e.harness import Containerd

    ctd = Containerd()
    try:
        ctd.start()
        yield ctd
    finally:
        ctd.close()


@pytest.fixture
def containerd_factory() -> Iterator[Callable[..., Any]]:
    """Factory of private containerds with a special config; all closed after the test."""
    require_containerd()
    from tests.e2e.harness import Containerd

    made: list[Containerd] = []

    def make(*, start: bool = True, **overrides: Any) -> Containerd:
        ctd = Containerd(**overrides)
        made.append(ctd)
        return ctd.start() if start else ctd

    try:
        yield make
    finally:
        for ctd in made:
            ctd.close()


@pytest.fixture
def cri(containerd: Any) -> Iterator[Any]:
    """CRI client on the session containerd; cleans up its pods and containers."""
    if not containerd.running:
        # an earlier test stopped or crashed it; later tests still get a working runtime
        containerd.start()
    client = containerd.cri()
    try:
        yield client
    finally:
        if containerd.running:
            client.close()
        else:
            client.channel.close()
