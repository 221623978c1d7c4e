"""gpu-cdi-nri's command line, config errors, metrics endpoint and health probe."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from nri_plugin.cli import build_parser, main
from nri_plugin.metrics import Metrics, MetricsServer, check_health
from tests.nri.fake_runtime import NOT_SOCKETS, PluginConn, not_a_socket


def test_flags_parse() -> None:
    args = build_parser().parse_args(
        [
            "--socket",
            "/s",
            "--mode",
            "native",
            "--spec-dir",
            "/a",
            "--spec-dir",
            "/b",
            "--plugin-idx",
            "20",
            "--metrics-port",
            "9464",
            "--log-level",
            "debug",
        ]
    )
    assert args.spec_dirs == ["/a", "/b"]
    assert args.mode == "native" and args.metrics_port == 9464 and args.command is None
    health = build_parser().parse_args(["health", "--metrics-port=9464"])
    assert health.command == "health" and health.metrics_port == 9464


def test_bad_config_file_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "nri.yaml"
    config.write_text("policy:\n  runtime_cdi: sometimes\n")
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f'gpu-cdi-nri: error: {config}: policy.runtime_cdi: invalid value "sometimes" '
        "(one of: auto, skip, inject)\n"
    )


def test_bad_flag_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--plugin-name", "bad name"]) == 2
    assert 'command line: --plugin-name: invalid plugin name "bad name"' in capsys.readouterr().err


def test_unreachable_socket_is_retried_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    # an external plugin waits for its runtime (containerd may start later or restart)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nri_plugin.cli",
            "--socket",
            str(tmp_path / "none.sock"),
            "--spec-dir",
            str(tmp_path),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1.5)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "cannot connect to" in err and "Traceback" not in err
    assert "msg=stopped" in err


def test_metrics_server_and_health_probe() -> None:
    metrics = Metrics(enabled=True)
    registered = [False]
    server = MetricsServer(metrics, lambda: registered[0], "127.0.0.1", 0)
    try:
        ok, said = check_health(server.port)
        assert not ok and "not registered" in said
        assert main(["health", f"--metrics-port={server.port}"]) == 1
        registered[0] = True
        assert check_health(server.port) == (True, "ok")
        assert main(["health", f"--metrics-port={server.port}"]) == 0
        metrics.injected("resolve", 8)
        metrics.error("policy")
        metrics.observe(0.0001)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as r:
            text = r.read().decode()
        assert 'gpu_cdi_nri_injections_total{mode="resolve"} 1.0' in text
        assert "gpu_cdi_nri_devices_injected_total 8.0" in text
        assert 'gpu_cdi_nri_errors_total{reason="policy"} 1.0' in text
        assert 'gpu_cdi_nri_create_container_seconds_bucket{le="0.0002"} 1.0' in text
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other")
    finally:
        server.close()
    assert not check_health(server.port)[0]


def test_disabled_metrics_do_not_need_prometheus_client() -> None:
    metrics = Metrics(enabled=False)
    metrics.injected("resolve", 1)
    assert metrics.render() == b""
    assert (
        "prometheus_client"
        not in subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, nri_plugin.plugin, nri_plugin.metrics; print(sorted(sys.modules))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


def test_taken_metrics_port_is_one_line_and_status_1(tmp_path: Path) -> None:
    server = MetricsServer(Metrics(enabled=False), lambda: True, "127.0.0.1", 0)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "nri_plugin.cli",
                "--socket",
                str(tmp_path / "none.sock"),
                "--spec-dir",
                str(tmp_path),
                "--metrics-port",
                str(server.port),
                "--log-level",
                "error",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        server.close()
    assert proc.returncode == 1
    assert proc.stderr == (
        f"gpu-cdi-nri: error: cannot serve metrics on 127.0.0.1:{server.port}: "
        "Address already in use\n"
    )


def nri(*args: str, **popen: Any) -> subprocess.CompletedProcess[str]:
    """`gpu-cdi-nri ARGS` as a process (stdin closed, 30 s at most)."""
    popen.setdefault("capture_output", "stdout" not in popen and "stderr" not in popen)
    return subprocess.run(
        [sys.executable, "-m", "nri_plugin.cli", *args],
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
        **popen,
    )


def test_empty_socket_is_an_error() -> None:
    proc = nri("--socket", "")
    assert proc.returncode == 2
    assert proc.stderr == "gpu-cdi-nri: error: command line: --socket: must not be empty\n"


@pytest.mark.parametrize("kind", NOT_SOCKETS)
def test_a_socket_path_that_is_not_a_socket_is_an_error(tmp_path: Path, kind: str) -> None:
    path = not_a_socket(tmp_path, kind)
    began = time.monotonic()
    proc = nri("--socket", str(path), "--spec-dir", str(tmp_path), "--log-level", "error")
    assert time.monotonic() - began < 10
    assert proc.returncode == 1
    what = "a directory" if kind == "directory" else "not a socket"
    assert proc.stderr.endswith(
        f'level=error msg=stopped error="10-gpu-cdi: {path} is {what}, '
        "not the runtime's NRI socket\"\n"
    )
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize("sink", ["/dev/full", "closed pipe"])
def test_a_log_that_cannot_be_written_ends_the_plugin(tmp_path: Path, sink: str) -> None:
    # ENOSPC or EPIPE on stderr: the plugin must not run on blind (nor print tracebacks
    # to nowhere): it stops with status 1.
    if sink == "/dev/full":
        stream = open(sink, "w")  # noqa: SIM115
    else:
        read_end, write_end = os.pipe()
        os.close(read_end)
        stream = os.fdopen(write_end, "w")
    with stream:
        began = time.monotonic()
        proc = nri("--socket", str(tmp_path / "none.sock"), "--spec-dir", str(tmp_path),
                   stdout=subprocess.PIPE, stderr=stream)  # fmt: skip
    assert proc.returncode == 1
    assert time.monotonic() - began < 10


def test_health_answer_that_cannot_be_written_is_status_1() -> None:
    server = MetricsServer(Metrics(enabled=False), lambda: True, "127.0.0.1", 0)
    try:
        with open("/dev/full", "w") as full:
            proc = nri("health", f"--metrics-port={server.port}", stdout=full,
                       stderr=subprocess.PIPE)  # fmt: skip
    finally:
        server.close()
    assert proc.returncode == 1
    assert proc.stderr == (
        "gpu-cdi-nri: error: cannot write the answer: No space left on device\n"
    )


def test_preinstalled_plugin_logs_its_inherited_socket_not_the_default(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = theirs.fileno()
    env = dict(os.environ, NRI_PLUGIN_SOCKET=str(fd), NRI_PLUGIN_NAME="pre", NRI_PLUGIN_IDX="07")
    with subprocess.Popen(
        [sys.executable, "-m", "nri_plugin.cli", "--spec-dir", str(tmp_path)],
        env=env,
        pass_fds=(fd,),
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        theirs.close()
        conn = PluginConn(ours)
        conn.handshake()
        conn.close()  # the runtime went away: a pre-installed plugin ends
        assert proc.wait(20) == 0
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert "/var/run/nri/nri.sock" not in err
    assert f'runtime="fd {fd} (inherited from the runtime)"' in err
