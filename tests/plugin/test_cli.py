"""gpu-cdi-nri's command line, config errors, metrics endpoint and health probe."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nri_plugin.cli import build_parser, main
from nri_plugin.metrics import Metrics, MetricsServer, check_health


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
