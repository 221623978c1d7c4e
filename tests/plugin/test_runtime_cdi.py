"""Mode choice from containerd's version and config (nri_plugin.runtime_cdi), and the plugin's
refusal of native mode where the runtime cannot resolve the names. Real config files, real
processes for the runtime-pid lookup; containerd itself in tests/plugin/test_e2e_native.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdi.registry import Registry
from nri_plugin.config import Config
from nri_plugin.plugin import GpuCdiPlugin
from nri_plugin.policy import Policy
from nri_plugin.protocol import Code, RpcError, api
from nri_plugin.runtime_cdi import (
    DEFAULT_CDI_SPEC_DIRS,
    RuntimeConfigError,
    RuntimeProbe,
    choose_mode,
    config_flag,
    locate_config,
    parse_runtime_version,
    read_containerd_cdi,
    restricts_annotations,
)
from tests.plugin.specs import GPU_SPEC, write_specs

V3 = '[plugins."io.containerd.cri.v1.runtime"]'
V2 = '[plugins."io.containerd.grpc.v1.cri"]'
DIRS = ("/etc/cdi", "/var/run/cdi")


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def probe_for(tmp_path: Path, text: str) -> RuntimeProbe:
    return RuntimeProbe(write(tmp_path / "config.toml", text))


def test_parse_version() -> None:
    assert parse_runtime_version("1.7.24~ds1") == (1, 7, 24)
    assert parse_runtime_version("v2.1") == (2, 1, 0)
    assert parse_runtime_version("dev") is None


@pytest.mark.parametrize(
    ("name", "version", "mode"),
    [
        ("containerd", "1.7.24~ds1", "resolve"),
        ("containerd", "1.7.29", "resolve"),
        ("containerd", "v1.7.30", "native"),
        ("containerd", "2.0.5", "resolve"),
        ("containerd", "2.1.0", "native"),
        ("containerd", "2.2.1-rc.1", "native"),
        ("cri-o", "1.33.0", "resolve"),
        ("containerd", "garbage", "resolve"),
    ],
)
def test_auto_needs_a_version_that_carries_cdi_names(
    tmp_path: Path, name: str, version: str, mode: str
) -> None:
    # CDI on and reading the default dirs, in both config formats
    probe = probe_for(tmp_path, f"version = 2\n{V2}\nenable_cdi = true\n")
    assert choose_mode("auto", name, version, DIRS, probe).mode == mode


def test_auto_without_a_readable_config_resolves(tmp_path: Path) -> None:
    choice = choose_mode("auto", "containerd", "2.1.9", DIRS, RuntimeProbe(str(tmp_path / "no")))
    assert choice.mode == "resolve"
    assert "cannot tell whether containerd 2.1.9 resolves CDI names" in choice.why
    assert f"{tmp_path}/no not found" in choice.why and "containerd_config" in choice.why
    # no probe at all: the same
    assert choose_mode("auto", "containerd", "2.1.9", DIRS).mode == "resolve"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (
            f"version = 3\n{V3}\nenable_cdi = false\n",
            f"has its CDI support off (enable_cdi = false in {V3} of ",
        ),
        (
            f'version = 3\n{V3}\ncdi_spec_dirs = ["/etc/cdi"]\n',
            'does not read the plugin\'s spec dir(s) /var/run/cdi (cdi_spec_dirs = ["/etc/cdi"] in',
        ),
        ("version = 3\nroot = [", "not valid TOML"),
        (f'version = 3\n{V3}\nenable_cdi = "yes"\n', "enable_cdi: expected true or false"),
        (f"version = 3\n{V3}\ncdi_spec_dirs = 1\n", "cdi_spec_dirs: expected a list of paths"),
        ("version = 7\n", "unknown config version 7"),
        ("version = 3\nimports = 3\n", "imports: expected a list of paths"),
    ],
)
def test_auto_resolves_and_says_why(tmp_path: Path, text: str, why: str) -> None:
    choice = choose_mode("auto", "containerd", "v2.1.9", DIRS, probe_for(tmp_path, text))
    assert choice.mode == "resolve"
    assert why in choice.why
    assert "\n" not in choice.why


def test_containerd_defaults_differ_by_release(tmp_path: Path) -> None:
    # a config that does not mention CDI: 2.x has it on, 1.7 off
    path = write(tmp_path / "config.toml", "version = 2\n")
    on = read_containerd_cdi(path, 2)
    assert on.enabled and on.spec_dirs == DEFAULT_CDI_SPEC_DIRS
    assert "containerd 2.x default" in on.enabled_from
    off = read_containerd_cdi(path, 1)
    assert not off.enabled
    choice = choose_mode("auto", "containerd", "1.7.30", DIRS, RuntimeProbe(path))
    assert choice.mode == "resolve"
    assert f"enable_cdi = false (containerd 1.x default: not set in {V2} of {path})" in choice.why


def test_v1_and_v2_tables(tmp_path: Path) -> None:
    v1 = write(tmp_path / "v1.toml", "[plugins.cri]\nenable_cdi = true\n")
    assert read_containerd_cdi(v1, 1).enabled
    v2 = write(tmp_path / "v2.toml", f'version = 2\n{V2}\ncdi_spec_dirs = ["/x"]\n')
    assert read_containerd_cdi(v2, 2).spec_dirs == ("/x",)
    # a v3 table in a v2 file is not where containerd looks
    other = write(tmp_path / "v2b.toml", f"version = 2\n{V3}\nenable_cdi = false\n")
    assert read_containerd_cdi(other, 2).enabled


def test_imports_merge_like_containerd(tmp_path: Path) -> None:
    main = write(
        tmp_path / "config.toml",
        f'version = 2\nimports = ["conf.d/*.toml"]\n{V2}\nenable_cdi = true\n',
    )
    write(tmp_path / "conf.d" / "10-dirs.toml", f'version = 2\n{V2}\ncdi_spec_dirs = ["/d"]\n')
    # 2.x merges plugin tables key by key: both settings hold
    merged = read_containerd_cdi(main, 2)
    assert merged.enabled and merged.spec_dirs == ("/d",)
    assert merged.dirs_from.endswith(f"of {tmp_path}/conf.d/10-dirs.toml")
    # 1.x: the imported table replaces the main file's: enable_cdi falls back to false
    replaced = read_containerd_cdi(main, 1)
    assert not replaced.enabled and replaced.spec_dirs == ("/d",)
    # a later import wins; a missing explicit import is an error (containerd would not start)
    write(tmp_path / "conf.d" / "20-off.toml", f"{V2}\nenable_cdi = false\n")
    assert not read_containerd_cdi(main, 2).enabled
    write(tmp_path / "config.toml", 'version = 2\nimports = ["/nonexistent.toml"]\n')
    with pytest.raises(
        RuntimeConfigError, match=r"/nonexistent\.toml: imported by \S+ but missing"
    ):
        read_containerd_cdi(main, 2)


def test_import_cycles_end(tmp_path: Path) -> None:
    main = write(tmp_path / "a.toml", 'version = 3\nimports = ["b.toml"]\n')
    write(tmp_path / "b.toml", f'imports = ["a.toml"]\n{V3}\nenable_cdi = false\n')
    assert not read_containerd_cdi(main, 2).enabled


def test_a_fifo_config_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    choice = choose_mode("auto", "containerd", "2.1.9", DIRS, RuntimeProbe(str(fifo)))
    assert choice.mode == "resolve" and "not a regular file" in choice.why


def test_a_binary_config_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"version = 3\n\xff\xfe\x00")
    choice = choose_mode("auto", "containerd", "2.1.9", DIRS, RuntimeProbe(str(path)))
    assert choice.mode == "resolve" and f"{path}: not UTF-8 text (byte 12)" in choice.why


def test_spec_dirs_compare_by_real_path(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    probe = probe_for(tmp_path, f'version = 3\n{V3}\ncdi_spec_dirs = ["{tmp_path}/link/"]\n')
    assert choose_mode("auto", "containerd", "2.1.9", [f"{tmp_path}/real"], probe).mode == "native"


def test_explicit_native_is_refused_only_where_it_cannot_work(tmp_path: Path) -> None:
    off = probe_for(tmp_path, f"version = 3\n{V3}\nenable_cdi = false\n")
    choice = choose_mode("native", "containerd", "2.1.9", DIRS, off)
    assert choice.mode == "native"
    assert choice.refusal is not None
    assert choice.refusal.startswith("mode native, but containerd 2.1.9 has its CDI support off")
    assert choice.refusal.endswith(
        "set enable_cdi = true there, or set mode: resolve for the plugin"
    )
    old = choose_mode("native", "containerd", "1.7.24~ds1", DIRS, off)
    assert old.refusal == (
        "mode native, but containerd 1.7.24~ds1 drops CDI names handed over NRI "
        "(needs >= 1.7.30 or >= 2.1.0): set mode: resolve for the plugin"
    )
    # cannot tell (unknown runtime, unreadable config): the operator's choice stands
    assert choose_mode("native", "cri-o", "1.33", DIRS, off).refusal is None
    unknown = RuntimeProbe(str(tmp_path / "missing.toml"))
    assert choose_mode("native", "containerd", "2.1.9", DIRS, unknown).refusal is None
    assert choose_mode("resolve", "containerd", "1.7.24", DIRS, off).mode == "resolve"


def test_warns_when_containerd_cdi_bypasses_a_restricting_policy(tmp_path: Path) -> None:
    on = probe_for(tmp_path, f"version = 3\n{V3}\nenable_cdi = true\n")
    (warning,) = choose_mode("resolve", "containerd", "2.1.9", DIRS, on, True).warnings
    assert "containerd's own CDI is on (enable_cdi = true in" in warning
    assert "set enable_cdi = false there" in warning
    assert not choose_mode("resolve", "containerd", "2.1.9", DIRS, on, False).warnings
    off = probe_for(tmp_path, f"version = 3\n{V3}\nenable_cdi = false\n")
    assert not choose_mode("auto", "containerd", "2.1.9", DIRS, off, True).warnings


def test_restricts_annotations() -> None:
    assert not restricts_annotations(Policy(), {"nvidia.com/gpu"})
    assert restricts_annotations(Policy(), {"nvidia.com/gpu", "management.nvidia.com/gpu"})
    assert restricts_annotations(Policy(annotation_namespaces=frozenset()), ())
    assert restricts_annotations(Policy(allowed_kinds=frozenset({"nvidia.com/gpu"})), ())


@pytest.mark.parametrize(
    ("argv", "value"),
    [
        (["containerd"], None),
        (["containerd", "--config", "/a.toml"], "/a.toml"),
        (["containerd", "-c", "b.toml", "--log-level", "debug"], "b.toml"),
        (["containerd", "--config=/c.toml"], "/c.toml"),
        (["containerd", "--log-level", "debug", "--config"], None),
    ],
)
def test_config_flag(argv: list[str], value: str | None) -> None:
    assert config_flag(argv) == value


@pytest.fixture
def fake_runtime(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line names a relative --config, as containerd's would."""
    script = tmp_path / "containerd"
    script.write_text("import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--config", "etc/config.toml"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_the_runtime_process_names_its_config(
    tmp_path: Path, fake_runtime: subprocess.Popen[bytes]
) -> None:
    where = locate_config(None, fake_runtime.pid)
    assert where.path == f"{tmp_path}/etc/config.toml"
    assert where.root == f"/proc/{fake_runtime.pid}/root" and where.authoritative
    probe = RuntimeProbe(runtime_pid=lambda: fake_runtime.pid)
    # read through the runtime's root: a missing file means containerd's defaults
    defaults = choose_mode("auto", "containerd", "2.1.9", DIRS, probe)
    assert defaults.mode == "native" and "containerd 2.x default" in defaults.why
    write(tmp_path / "etc" / "config.toml", f"version = 3\n{V3}\nenable_cdi = false\n")
    assert choose_mode("auto", "containerd", "2.1.9", DIRS, probe).mode == "resolve"
    # an explicit setting wins over the process
    explicit = RuntimeProbe(str(tmp_path / "x.toml"), lambda: fake_runtime.pid)
    assert locate_config(explicit.containerd_config, fake_runtime.pid).path.endswith("/x.toml")
    # no pid: the default path in our own mount namespace, not proof of anything if missing
    assert not locate_config(None, None).authoritative


def test_native_refusal_fails_each_request_with_one_line(tmp_path: Path) -> None:
    spec_dir = write_specs(tmp_path / "cdi", gpu=GPU_SPEC)
    off = probe_for(tmp_path, f"version = 3\n{V3}\nenable_cdi = false\n")
    with Registry([str(spec_dir)]) as registry:
        plugin = GpuCdiPlugin(Config(mode="native", spec_dirs=registry.spec_dirs), registry)
        plugin.probe = off
        configure = api.ConfigureRequest(runtime_name="containerd", runtime_version="2.1.9")
        asyncio.run(plugin.configure(configure))
        pod = api.PodSandbox(id="p", name="p", namespace="default")
        asking = api.Container(id="c", name="c", env=["NVIDIA_VISIBLE_DEVICES=0"])
        for _ in range(2):
            with pytest.raises(RpcError) as caught:
                plugin.create_container(pod, asking)
            assert caught.value.code == Code.FAILED_PRECONDITION
            message = str(caught.value)
            assert "gpu-cdi: pod default/p container c: mode native, but containerd" in message
            assert "set enable_cdi = true there" in message and "\n" not in message
        # a container asking for nothing is not touched
        plain = api.Container(id="d", name="d", env=["PATH=/bin"])
        assert plugin.create_container(pod, plain) is None


def test_the_stub_knows_the_runtimes_pid(tmp_path: Path) -> None:
    from nri_plugin.protocol import Plugin
    from tests.nri.fake_runtime import FakeRuntime
    from tests.nri.plugin_thread import PluginThread

    runtime = FakeRuntime(str(tmp_path / "nri.sock"))
    try:
        with PluginThread(Plugin(), socket_path=runtime.path) as pt:
            runtime.accept().wait_registered()
            assert pt.stub is not None
            # The runtime saw the registration; on a loaded machine the stub may still be
            # between its connection and the reply (or reconnecting after a slow one).
            deadline = time.monotonic() + 10
            while pt.stub.peer_pid is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert pt.stub.peer_pid == os.getpid()  # the fake runtime is this process
        assert pt.stub.peer_pid is None  # no connection, no peer
    finally:
        runtime.close()


def test_without_a_runtime_pid_the_hosts_default_config_under_host_root(tmp_path: Path) -> None:
    # the DaemonSet: no host pid namespace, the node's / at /host
    probe = RuntimeProbe(host_root=str(tmp_path))
    missing = choose_mode("auto", "containerd", "2.1.9", DIRS, probe)
    assert missing.mode == "resolve"
    assert f"{tmp_path}/etc/containerd/config.toml not found" in missing.why
    write(tmp_path / "etc/containerd/config.toml", f"version = 3\n{V3}\nenable_cdi = true\n")
    found = choose_mode("auto", "containerd", "2.1.9", DIRS, probe)
    assert found.mode == "native"
    assert f"in {V3} of /etc/containerd/config.toml" in found.why  # named as containerd sees it
