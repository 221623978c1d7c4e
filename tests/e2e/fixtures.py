"""pytest fixtures for real containerds with NRI + CDI (registered in tests/conftest.py).

Every test that uses `containerd`, `cri` or `containerd_factory` runs once per containerd
release of `tests.e2e.paths.CONTAINERD_VERSIONS`: 1.7 (trixie's 1.7.24, config version 2) and
2.1 (sid's 2.1.x, config version 3); test ids end in `[containerd-1.7]` / `[containerd-2.1]`.

- `@pytest.mark.containerd_versions("2.1")` on a test (or module: `pytestmark = ...`) runs it
  on the listed releases only (a behaviour that exists on one of them).
- `GPU_CDI_CONTAINERD=2.1` (comma-separated list) in the environment runs every such test on
  those releases only, e.g. to iterate quickly; CI runs all of them.
- `-k containerd-2.1` selects the 2.1 runs of a test file.

Fixtures
--------
containerd_version (session, parametrized)
    "1.7" or "2.1": the release this test runs on. Request it to branch on a difference
    (`paths.containerd_release(version).config_version`).
containerd (session)
    A started `tests.e2e.harness.Containerd` of that release with the default
    `ContainerdConfig`: NRI on
    (external socket `.nri_socket`, pre-installed plugins from `.plugin_dir`, configs from
    `.conf_dir`), CDI on with `cdi_spec_dirs = [.cdi_dir]`, root/state on tmpfs, the busybox
    image `.image` imported. Shared by all tests: write CDI specs under a unique file name,
    do not leave plugins in `.plugin_dir`, and do not restart it with a different config (use
    `containerd_factory` for that). `.restart()` (same config) is fine.
containerd_factory (function)
    `containerd_factory(**overrides) -> Containerd`: a fresh, started private containerd of
    the test's release; overrides are `ContainerdConfig` fields, e.g. `enable_cdi=False`,
    `nri=False`, `plugin_request_timeout="500ms"` (`version="2.1"` overrides the release).
    Pass `start=False` to get it unstarted (e.g. to `install_plugin(...)` first, then
    `.start()`). All are closed at the end of the test.
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

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from tests.e2e import paths
from tests.require import need, need_root

VERSIONS_ENV = "GPU_CDI_CONTAINERD"
MARKER = "containerd_versions"


def selected_versions() -> tuple[str, ...]:
    """The containerd releases to run on: all, or those listed in $GPU_CDI_CONTAINERD."""
    chosen = os.environ.get(VERSIONS_ENV, "").strip()
    if not chosen:
        return paths.CONTAINERD_VERSIONS
    versions = tuple(v.strip() for v in chosen.split(",") if v.strip())
    for v in versions:
        paths.containerd_release(v)  # ValueError names the known ones
    return versions


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*versions): run this containerd test on these releases only "
        f"(of {', '.join(paths.CONTAINERD_VERSIONS)})",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "containerd_version" not in metafunc.fixturenames:
        return
    versions: Sequence[str] = selected_versions()
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is not None:
        for v in marker.args:
            paths.containerd_release(v)
        versions = [v for v in versions if v in marker.args]
    metafunc.parametrize(
        "containerd_version",
        versions,
        indirect=True,
        scope="session",
        ids=[f"containerd-{v}" for v in versions],
    )


def require_containerd(version: str = "1.7") -> None:
    """Skip (fail in CI) unless this process is root and the harness packages are installed."""
    need_root()
    msg = paths.missing_message(version)
    need(msg is None, msg or "")


@pytest.fixture(scope="session")
def containerd_version(request: pytest.FixtureRequest) -> str:
    """The containerd release of this test run (parametrized; see the module docstring)."""
    version: str = getattr(request, "param", paths.CONTAINERD_VERSIONS[0])
    return version


@pytest.fixture(scope="session")
def containerd(containerd_version: str) -> Iterator[Any]:
    """Session-wide private containerd with NRI and CDI enabled (see module docstring)."""
    require_containerd(containerd_version)
    from tests.e2e.harness import Containerd

    ctd = Containerd(version=containerd_version)
    try:
        ctd.start()
        yield ctd
    finally:
        ctd.close()


@pytest.fixture
def containerd_factory(containerd_version: str) -> Iterator[Callable[..., Any]]:
    """Factory of private containerds with a special config; all closed after the test."""
    require_containerd(containerd_version)
    from tests.e2e.harness import Containerd

    made: list[Containerd] = []

    def make(*, start: bool = True, **overrides: Any) -> Containerd:
        overrides.setdefault("version", containerd_version)
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
