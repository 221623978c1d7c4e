"""Device plugin benchmark: the numbers of issue 11, each beside an anchor measured in the run.

    python bench/device_plugin.py [-n 3000] [--restarts 10] [--events 20]

The plugin runs as its own process (`python -m device_plugin.cli`), driven by the kubelet
stand-in of tests/device_plugin (the official v1beta1 API over grpcio, Unix sockets).

- Allocate round trip: one container, 1 MIG device of 448 (scale-64, mixed), all three
  strategies; anchor: GetDevicePluginOptions (a do-nothing RPC) on the same channel,
  interleaved call by call.
- health change -> ListAndWatch: XID 48 on a GPU of the fake host until the stand-in's stream
  shows its devices Unhealthy; anchor: the same event seen by a bare pynvml nvmlEventSetWait
  in this process.
- re-registration: kubelet restart (socket dir wiped, new kubelet.sock) until Register
  arrives; anchor: a fresh connection + GetDevicePluginOptions to the plugin.
- RSS: the plugin on scale-64 (64 GPUs, 448 MIG devices), NVML + health thread, after the
  above; anchor: a bare Python process serving one grpcio server.

Needs root for the fake host (device nodes); without it, the health and NVML rows are skipped
and the plugin reads the saved scale-64 inventory. Targets: Allocate p99 <= 5 ms, health
<= 1 s, re-registration <= 2 s, RSS <= 45 MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.proc import rss_mb  # noqa: E402
from bench.stats import percentile  # noqa: E402
from device_plugin.api import UNHEALTHY, Stub, pb  # noqa: E402
from tests.device_plugin.kubelet import FakeKubelet  # noqa: E402
from tests.device_plugin.support import INVENTORIES, Plugin  # noqa: E402

TARGETS = {"allocate_p99_ms": 5.0, "health_s": 1.0, "register_s": 2.0, "rss_mb": 45.0}
RESOURCE = "nvidia.com/mig-1g.5gb"
BARE_SERVER = """
import concurrent.futures, grpc, sys, time
server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
server.add_insecure_port("unix://" + sys.argv[1])
server.start()
print("up", flush=True)
time.sleep(3600)
"""


def fake_host(base: Path) -> Any:
    """The scale-64 fake host, or None when this process cannot build one (not root)."""
    if os.geteuid() != 0:
        return None
    from gpu_cdi_fakehost.builder import build_host

    return build_host("scale-64", base / "host")


def allocate_case(kubelet: FakeKubelet, n: int) -> dict[str, float]:
    plugin = kubelet.plugins[RESOURCE]
    ids = kubelet.healthy(RESOURCE)
    request = pb.AllocateRequest(
        container_requests=[pb.ContainerAllocateRequest(devices_ids=[ids[7]])]
    )
    for _ in range(200):  # warm-up
        plugin.stub.Allocate(request, timeout=10)
        plugin.stub.GetDevicePluginOptions(pb.Empty(), timeout=10)
    ours, anchor = [], []
    clock = time.perf_counter
    for i in range(n):
        request.container_requests[0].devices_ids[0] = ids[i % len(ids)]
        t0 = clock()
        plugin.stub.Allocate(request, timeout=10)
        t1 = clock()
        plugin.stub.GetDevicePluginOptions(pb.Empty(), timeout=10)
        t2 = clock()
        ours.append(t1 - t0)
        anchor.append(t2 - t1)
    return {
        "allocate_p50_ms": percentile(ours, 50) * 1e3,
        "allocate_p99_ms": percentile(ours, 99) * 1e3,
        "anchor_p50_ms": percentile(anchor, 50) * 1e3,
        "anchor_p99_ms": percentile(anchor, 99) * 1e3,
    }


def restart_case(kubelet: FakeKubelet, restarts: int) -> dict[str, float]:
    socket = kubelet.dir / "gpu-cdi-mig-1g.5gb.sock"
    ours, anchor = [], []
    for _ in range(restarts):
        t0 = time.monotonic()
        kubelet.restart()
        kubelet.wait_for(
            lambda at=t0: kubelet.registered(RESOURCE, after=at),
            timeout=30,
            what="registration",  # type: ignore[misc]
        )
        ours.append(max(r.at for r in kubelet.registrations if r.resource == RESOURCE) - t0)
        import grpc

        t1 = time.monotonic()
        with grpc.insecure_channel(f"unix://{socket}") as channel:
            Stub(channel, "DevicePlugin").GetDevicePluginOptions(pb.Empty(), timeout=10)
        anchor.append(time.monotonic() - t1)
        time.sleep(0.3)
    return {
        "register_p50_s": percentile(ours, 50),
        "register_max_s": max(ours),
        "register_anchor_s": percentile(anchor, 50),
    }


def health_case(kubelet: FakeKubelet, host: Any, events: int) -> dict[str, float]:
    """XIDs on distinct GPUs; each timed to the stand-in's list and to a bare NVML waiter."""
    import pynvml
    from gpu_cdi_fakehost.pytest_plugin import preload_nvml

    os.environ.update(host.env)
    preload_nvml(host)
    pynvml.nvmlInit()
    event_set = pynvml.nvmlEventSetCreate()
    for index in range(len(host.topology.gpus)):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceRegisterEvents(handle, pynvml.nvmlEventTypeXidCriticalError, event_set)
    seen: list[float] = []

    def waiter() -> None:
        while len(seen) < events:
            try:
                pynvml.nvmlEventSetWait_v2(event_set, 1000)
            except pynvml.NVMLError_Timeout:
                continue
            seen.append(time.monotonic())

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    migs_of = {g.index: {m.uuid for m in g.mig_devices} for g in host.topology.gpus}
    ours, anchor = [], []
    for k in range(events):
        gpu = k % len(migs_of)
        t0 = time.monotonic()
        host.events.xid(gpu, 48)
        kubelet.wait_for(
            lambda g=gpu: (
                migs_of[g]  # type: ignore[misc]
                <= {d.ID for d in kubelet.devices(RESOURCE) if d.health == UNHEALTHY}
            ),
            timeout=10,
            what="the device Unhealthy in ListAndWatch",
        )
        listed = next(at for at, devices in reversed(kubelet.lists[RESOURCE]) if at >= t0)
        ours.append(listed - t0)
        deadline = time.monotonic() + 5
        while len(seen) <= k and time.monotonic() < deadline:
            time.sleep(0.001)
        anchor.append(seen[k] - t0)
    thread.join(5)
    return {
        "health_p50_s": percentile(ours, 50),
        "health_max_s": max(ours),
        "health_anchor_s": percentile(anchor, 50),
    }


def bare_rss(base: Path) -> float:
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE_SERVER, str(base / "bare.sock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(0.5)
        return rss_mb(proc.pid, "VmHWM")
    finally:
        proc.kill()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    """Run the cases and print the table."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("-n", type=int, default=3000, help="timed Allocate calls")
    ap.add_argument("--restarts", type=int, default=10, help="kubelet restarts")
    ap.add_argument("--events", type=int, default=20, help="XID events (fake host only)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        host = fake_host(base)
        source = (
            [*host.generate_argv[2:]]
            if host is not None
            else ["--inventory", str(INVENTORIES / "scale-64.yaml")]
        )
        results: dict[str, float] = {}
        with FakeKubelet(base / "device-plugins") as kubelet:
            argv = [*source, "--mig-strategy", "mixed", "--kubelet-socket", str(kubelet.socket)]
            for strategy in ("envvar", "cdi-annotations", "cdi-cri"):
                argv += ["--device-list-strategy", strategy]
            with Plugin(argv, base / "plugin.log", env=host.env if host else None) as plugin:
                kubelet.wait_for(
                    lambda: len(kubelet.healthy(RESOURCE)) == 448, timeout=60, what="448"
                )
                results.update(allocate_case(kubelet, args.n))
                if host is not None and "no XID checks" not in plugin.log():
                    results.update(health_case(kubelet, host, args.events))
                results.update(restart_case(kubelet, args.restarts))
                results["rss_mb"] = rss_mb(plugin.proc.pid)
                results["peak_rss_mb"] = rss_mb(plugin.proc.pid, "VmHWM")
        results["anchor_rss_mb"] = bare_rss(base)
    load = os.getloadavg()[0]
    print(
        f"# gpu-cdi-device-plugin, scale-64 ({'fake host, NVML' if host else 'saved inventory'}), "
        f"--mig-strategy mixed, {RESOURCE} x448; load avg {load:.1f} on {os.cpu_count()} CPUs"
    )
    print("| number | ours | anchor | ratio | target | ok |")
    print("|---|---|---|---|---|---|")

    def row(label: str, value: float, anchor: float, unit: str, target: float) -> None:
        ok = "yes" if value <= target else "NO"
        ratio = value / anchor if anchor else float("nan")
        cells = [f"{value:.3g} {unit}", f"{anchor:.3g} {unit}", f"{ratio:.1f}x"]
        print(f"| {label} | {' | '.join(cells)} | <= {target:g} {unit} | {ok} |")

    r = results
    row(
        "Allocate round trip p50",
        r["allocate_p50_ms"],
        r["anchor_p50_ms"],
        "ms",
        TARGETS["allocate_p99_ms"],
    )
    row(
        "Allocate round trip p99",
        r["allocate_p99_ms"],
        r["anchor_p99_ms"],
        "ms",
        TARGETS["allocate_p99_ms"],
    )
    if "health_p50_s" in r:
        row(
            "health change -> ListAndWatch p50",
            r["health_p50_s"],
            r["health_anchor_s"],
            "s",
            TARGETS["health_s"],
        )
        row(
            "health change -> ListAndWatch max",
            r["health_max_s"],
            r["health_anchor_s"],
            "s",
            TARGETS["health_s"],
        )
    else:
        skipped = "skipped: needs root and the fake NVML's events"
        print(f"| health change -> ListAndWatch | {skipped} | | | | |")
    row(
        "re-registration p50",
        r["register_p50_s"],
        r["register_anchor_s"],
        "s",
        TARGETS["register_s"],
    )
    row(
        "re-registration max",
        r["register_max_s"],
        r["register_anchor_s"],
        "s",
        TARGETS["register_s"],
    )
    row("RSS after the above", r["rss_mb"], r["anchor_rss_mb"], "MB", TARGETS["rss_mb"])
    row("RSS peak", r["peak_rss_mb"], r["anchor_rss_mb"], "MB", TARGETS["rss_mb"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
