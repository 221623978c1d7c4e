"""Optional Prometheus metrics and a health endpoint on a localhost port.

prometheus_client is imported only when metrics are switched on, so the plugin runs without
it. Served paths: `/metrics` (Prometheus text format) and `/healthz` (200 while the plugin is
registered with the runtime, else 503).
"""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

# Handling a CreateContainer takes tens of microseconds to a few milliseconds.
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.0002,
    0.0003,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.05,
    0.1,
    1.0,
)


class MetricsUnavailable(RuntimeError):
    """Metrics were asked for but prometheus_client is not installed."""


class Metrics:
    """Counters and the latency histogram; every method is a no-op when disabled."""

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled
        self.registry: Any = None
        if not enabled:
            return
        try:
            import prometheus_client as prom
        except ImportError:
            raise MetricsUnavailable(
                "--metrics-port needs the prometheus-client package "
                "(pip install 'gpu-cdi[metrics]')"
            ) from None

        self.registry = prom.CollectorRegistry()
        self._requests = prom.Counter(
            "gpu_cdi_nri_requests",
            "Containers that requested CDI devices, by source",
            ["source"],
            registry=self.registry,
        )
        self._injections = prom.Counter(
            "gpu_cdi_nri_injections",
            "Containers given CDI devices, by delivery mode",
            ["mode"],
            registry=self.registry,
        )
        self._devices = prom.Counter(
            "gpu_cdi_nri_devices_injected",
            "CDI devices given to containers",
            registry=self.registry,
        )
        self._errors = prom.Counter(
            "gpu_cdi_nri_errors",
            "Containers failed by the plugin, by reason",
            ["reason"],
            registry=self.registry,
        )
        self._latency = prom.Histogram(
            "gpu_cdi_nri_create_container_seconds",
            "Time the plugin spends on one CreateContainer",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def request(self, source: str) -> None:
        """A container asked for devices through `source` (annotation convention or env)."""
        if self.enabled:
            self._requests.labels(source).inc()

    def injected(self, mode: str, devices: int) -> None:
        """A container was given `devices` devices in `mode`."""
        if self.enabled:
            self._injections.labels(mode).inc()
            self._devices.inc(devices)

    def error(self, reason: str) -> None:
        """A container was failed for `reason` (request, policy, unknown_device, host, runtime)."""
        if self.enabled:
            self._errors.labels(reason).inc()

    def observe(self, seconds: float) -> None:
        """Time spent on one CreateContainer."""
        if self.enabled:
            self._latency.observe(seconds)

    def render(self) -> bytes:
        """The metrics in Prometheus text format (empty when disabled)."""
        if not self.enabled:
            return b""
        import prometheus_client as prom

        data: bytes = prom.generate_latest(self.registry)
        return data


class MetricsServer:
    """`/metrics` and `/healthz` over HTTP on `address:port`, served from a daemon thread."""

    def __init__(
        self, metrics: Metrics, healthy: Callable[[], bool], address: str, port: int
    ) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, status, kind = owner.metrics.render(), 200, "text/plain; version=0.0.4"
                elif self.path == "/healthz":
                    ok = owner.healthy()
                    body = b"ok\n" if ok else b"not registered with the runtime\n"
                    status, kind = (200 if ok else 503), "text/plain"
                else:
                    body, status, kind = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the plugin's own log

        self.metrics = metrics
        self.healthy = healthy
        try:
            self._server = http.server.ThreadingHTTPServer((address, port), Handler)
        except OSError as error:
            raise OSError(
                error.errno, f"cannot serve metrics on {address}:{port}: {error.strerror}"
            ) from None
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def check_health(port: int, address: str = "127.0.0.1", timeout: float = 3.0) -> tuple[bool, str]:
    """Ask a running plugin's `/healthz`; (healthy, what it said or why it failed)."""
    url = f"http://{address}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return True, response.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as error:
        return False, error.read().decode(errors="replace").strip() or str(error)
    except OSError as error:
        return False, f"{url}: {error}"
