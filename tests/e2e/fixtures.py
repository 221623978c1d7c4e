"""pytest fixtures for real container runtimes (registered in tests/conftest.py): containerd
with NRI + CDI, podman and Docker as CDI consumers.

Every test that uses `containerd`, `cri` or `containerd_factory` runs once per containerd
release of `tests.e2e.paths.CONTAINERD_VERSIONS`: 1.7 (trixie's 1.7.24, config version 2) and
2.1 (sid's 2.1.x, config version 3); test ids end in `[containerd-1.7]` / `[containerd-2.1]`.
Likewise every test using `podman` runs on podman 4.3 and 5.4 (`[podman-4.3]`, `[podman-5.4]`).

- `@pytest.mark.containerd_versions("2.1")` (`podman_versions("5.4")`) on a test, or on a
  module (`pytestmark = ...`), runs it on the listed releases only.
- `GPU_CDI_CONTAINERD=2.1` / `GPU_CDI_PODMAN=5.4` (comma-separated lists) in the environment
  run every such test on those releases only, e.g. to iterate quickly; CI sets neither.
- `-k containerd-2.1` (`-k podman-5.4`) selects those runs of a test file.

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

podman_version (session, parametrized), podman (session)
    "4.3" or "5.4"; a `tests.e2e.podman.Podman` of that release with private storage and a
    busybox image: `podman.run([spec_path, ...], ["nvidia.com/gpu=0"], "sh command")` runs
    `podman run --rm --device ...` with those specs alone in /etc/cdi + /var/run/cdi (private
    mount namespace) -> CompletedProcess; `.release.max_cdi_version`, `podman(*args)` (raises
    PodmanError), `.import_layer(layer, ref)`, `.run_args(...)`.
docker (session)
    A started private Docker 28 (`tests.e2e.docker.Dockerd`): write specs into `.cdi_dir`
    (its --cdi-spec-dir; unique file names), `docker.run(["nvidia.com/gpu=all"], "sh command")`
    -> CompletedProcess; `.docker(*args)` for any CLI call.

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
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.e2e import paths
from tests.e2e.podman import PODMAN_VERSIONS, podman_release
from tests.require import need, need_root


@attrs.frozen
class Axis:
    """A parametrized runtime version fixture: its marker and environment override."""

    fixture: str  # e.g. containerd_version
    marker: str  # e.g. containerd_versions
    env: str  # e.g. GPU_CDI_CONTAINERD
    versions: tuple[str, ...]
    check: Callable[[str], object]  # raises ValueError for an unknown version

    def selected(self) -> tuple[str, ...]:
        """All versions, or those listed (comma-separated) in the environment variable."""
        chosen = os.environ.get(self.env, "").strip()
        if not chosen:
            return self.versions
        versions = tuple(v.strip() for v in chosen.split(",") if v.strip())
        for v in versions:
            self.check(v)
        return versions


AXES = (
    Axis(
        "containerd_version",
        "containerd_versions",
        "GPU_CDI_CONTAINERD",
        paths.CONTAINERD_VERSIONS,
        paths.containerd_release,
    ),
    Axis("podman_version", "podman_versions", "GPU_CDI_PODMAN", PODMAN_VERSIONS, podman_release),
)


def pytest_configure(config: pytest.Config) -> None:
    for axis in AXES:
        config.addinivalue_line(
            "markers",
            f"{axis.marker}(*versions): run this test on these releases only "
            f"(of {', '.join(axis.versions)})",
        )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for axis in AXES:
        if axis.fixture not in metafunc.fixturenames:
            continue
        versions: Sequence[str] = axis.selected()
        marker = metafunc.definition.get_closest_marker(axis.marker)
        if marker is not None:
            for v in marker.args:
                axis.check(v)
            versions = [v for v in versions if v in marker.args]
        name = axis.fixture.removesuffix("_version")
        metafunc.parametrize(
            axis.fixture,
            versions,
            indirect=True,
            scope="session",
            ids=[f"{name}-{v}" for v in versions],
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


# -- podman and Docker ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def podman_version(request: pytest.FixtureRequest) -> str:
    """The podman release of this test run (parametrized like containerd_version)."""
    version: str = getattr(request, "param", "4.3")
    return version


@pytest.fixture(scope="session")
def podman(podman_version: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A `tests.e2e.podman.Podman` of that release, with private storage and the image."""
    from tests.e2e.podman import Podman, missing_message

    need_root()
    msg = missing_message(podman_version)
    need(msg is None, msg or "")
    return Podman.of(podman_version, Path(tmp_path_factory.mktemp(f"podman-{podman_version}")))


@pytest.fixture(scope="session")
def docker() -> Iterator[Any]:
    """A started private `tests.e2e.docker.Dockerd` (Docker 28, CDI specs from `.cdi_dir`)."""
    from tests.e2e import docker as docker_module

    need_root()
    msg = docker_module.missing_message()
    need(msg is None, msg or "")
    daemon = docker_module.Dockerd()
    try:
        yield daemon.start()
    finally:
        daemon.close()
