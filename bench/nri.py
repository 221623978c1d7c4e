"""NRI round trip: gpu-cdi-nri resolving one GPU against a no-op plugin on containerd's Go
stub, measured in the same run.

    .venv/bin/python bench/nri.py [--rounds 12] [--block 1000] [--size 4400] [--nice -15]

Every plugin runs as its own process, attached to its own runtime side (tests/nri/
fake_runtime.py: a blocking socket framing like containerd 1.7.24, a large message split
4096 + rest), which times each CreateContainer from the first byte written to the last byte
of the answer read. The cases run in interleaved blocks, each once per round, so that load
changes on the shared machine hit all of them alike:

- gpu-cdi-nri, 1 GPU: the real program in resolve mode, logging at info (a line per
  injection, into a file), with the spec `gpu-cdi generate` writes for a fake DGX A100; the
  4.4 kB request asks for one GPU by NVIDIA_VISIBLE_DEVICES=0 (the answer is ~11 kB).
- gpu-cdi-nri, no request: the same process, a container that asks for nothing.
- Python no-op: tests/nri/sample_plugin.py (trivial) on nri_plugin.protocol, the stack alone.
- Go no-op, the anchor: bench/nri_go_trivial (NRI 0.6.1's stub), built by its build.sh from
  Debian's Go packages.

Printed per case: latency percentiles, throughput at concurrency 1 and with 16 calls in
flight, the plugin's CPU time per request, and its resident memory after the run (gpu-cdi-nri
has served >= 10,000 requests by then), each with its ratio to the Go no-op. MB = MiB.
Targets (issue 14): 1 GPU p50 <= 1.0x the Go no-op, p99 <= 1 ms, >= 8000 req/s, RSS <= 25 MB.
Needs root (the fake host's device nodes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.nri_gpu import build_spec_dir  # noqa: E402
from tests.nri.fake_runtime import FakeRuntime, PluginConn, sample_create_request  # noqa: E402

TARGET_P50_RATIO = 1.0
TARGET_P99_US = 1000.0
TARGET_RPS = 8000.0
TARGET_RSS_MB = 25.0
GPU = "gpu-cdi-nri, 1 GPU"
ANCHOR = "Go no-op"


def go_plugin() -> str:
    """The Go no-op plugin's path, built (or found up to date) by its build script."""
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "nri_go_trivial" / "build.sh")],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit("bench/nri_go_trivial/build.sh failed (its output is above)")
    return proc.stdout.strip().splitlines()[-1]


class Plugin:
    """A plugin process attached to its own fake runtime."""

    def __init__(self, argv: list[str], socket: str, log: Path) -> None:
        self.runtime = FakeRuntime(socket)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [*argv, "--socket", socket],
                cwd=REPO,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        self.conn: PluginConn = self.runtime.accept(timeout=60)
        self.conn.handshake()

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.runtime.close()


class Case:
    """One kind of request to one plugin, and what was measured for it."""

    def __init__(self, label: str, plugin: Plugin, payload: bytes) -> None:
        self.label = label
        self.plugin = plugin
        self.payload = payload
        self.latencies: list[float] = []
        self.cpu = 0.0
        self.calls = 0

    def block(self, n: int) -> None:
        """`n` timed calls, one at a time."""
        conn, payload, clock = self.plugin.conn, self.payload, time.perf_counter
        lat = self.latencies
        cpu = self.plugin.cpu_seconds()
        for _ in range(n):
            start = clock()
            answer = conn.call("CreateContainer", payload)
            lat.append(clock() - start)
            if answer.code:
                raise SystemExit(f"{self.label}: answered {answer.code}: {answer.message}")
        self.cpu += self.plugin.cpu_seconds() - cpu
        self.calls += n

    def pipelined_rps(self, n: int, depth: int = 16) -> float:
        """Requests per second with `depth` calls in flight."""
        conn = self.plugin.conn
        start = time.perf_counter()
        window = [conn.request("CreateContainer", self.payload) for _ in range(depth)]
        for _ in range(n):
            conn.wait_answer(window.pop(0))
            window.append(conn.request("CreateContainer", self.payload))
        for stream in window:
            conn.wait_answer(stream)
        return (n + depth) / (time.perf_counter() - start)


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def measure(args: argparse.Namespace, work: Path) -> tuple[dict[str, dict[str, float]], int]:
    spec_dir = build_spec_dir(work)
    ours_argv = [sys.executable, "-m", "nri_plugin.cli", "--spec-dir", str(spec_dir)]
    ours_argv += ["--mode", "resolve", "--log-level", "info", "--plugin-idx", "50"]
    python_noop = [sys.executable, "-m", "tests.nri.sample_plugin", "--mode", "trivial"]
    plugins = {
        "ours": Plugin(ours_argv, str(work / "ours.sock"), work / "ours.log"),
        "python": Plugin(python_noop, str(work / "python.sock"), work / "python.log"),
        "go": Plugin([go_plugin()], str(work / "go.sock"), work / "go.log"),
    }
    try:
        request = sample_create_request(args.size)
        plain = request.SerializeToString()
        request.container.env.append("NVIDIA_VISIBLE_DEVICES=0")
        gpu = request.SerializeToString()
        cases = [
            Case(GPU, plugins["ours"], gpu),
            Case("gpu-cdi-nri, no request", plugins["ours"], plain),
            Case("Python no-op", plugins["python"], plain),
            Case(ANCHOR, plugins["go"], plain),
        ]
        for case in cases:  # imports, caches, the allocator; then start counting
            case.block(args.warmup)
            case.latencies.clear()
            case.cpu, case.calls = 0.0, 0
        for _ in range(args.rounds):
            for case in cases:
                case.block(args.block)
        results = {}
        for case in cases:
            lat = case.latencies
            results[case.label] = {
                "p50_us": percentile(lat, 50) * 1e6,
                "p90_us": percentile(lat, 90) * 1e6,
                "p99_us": percentile(lat, 99) * 1e6,
                "mean_us": statistics.fmean(lat) * 1e6,
                "rps": len(lat) / sum(lat),
                "rps_16": case.pipelined_rps(args.block),
                "cpu_us": case.cpu / case.calls * 1e6,
                "rss_mb": case.plugin.rss_mb(),
            }
        served = sum(c.calls for c in cases if c.plugin is plugins["ours"]) + 2 * args.warmup
        with open(work / "ours.log", encoding="utf-8") as log:
            injected = sum("msg=injected" in line for line in log)
        if injected < args.rounds * args.block:
            raise SystemExit(f"gpu-cdi-nri logged {injected} injections, fewer than it made")
        return results, served
    finally:
        for plugin in plugins.values():
            plugin.close()


Check = Callable[[dict[str, dict[str, float]]], tuple[str, bool]]
ROWS: list[tuple[str, str, str, Check | None]] = [
    (
        "p50 latency",
        "p50_us",
        "{:.0f} us",
        lambda r: (
            f"1 GPU <= {TARGET_P50_RATIO:.1f}x Go",
            r[GPU]["p50_us"] <= TARGET_P50_RATIO * r[ANCHOR]["p50_us"],
        ),
    ),
    ("p90 latency", "p90_us", "{:.0f} us", None),
    (
        "p99 latency",
        "p99_us",
        "{:.0f} us",
        lambda r: (f"1 GPU <= {TARGET_P99_US:.0f} us", r[GPU]["p99_us"] <= TARGET_P99_US),
    ),
    ("mean latency", "mean_us", "{:.0f} us", None),
    (
        "throughput, 1 in flight",
        "rps",
        "{:.0f}/s",
        lambda r: (f"1 GPU >= {TARGET_RPS:.0f}/s", r[GPU]["rps"] >= TARGET_RPS),
    ),
    ("throughput, 16 in flight", "rps_16", "{:.0f}/s", None),
    ("plugin CPU per request", "cpu_us", "{:.0f} us", None),
    (
        "plugin RSS after the run",
        "rss_mb",
        "{:.1f} MB",
        lambda r: (f"1 GPU <= {TARGET_RSS_MB:.0f} MB", r[GPU]["rss_mb"] <= TARGET_RSS_MB),
    ),
]


def table(results: dict[str, dict[str, float]]) -> str:
    """Markdown: each figure beside its ratio to the anchor, and the targets."""
    names = list(results)
    head = " | ".join(f"{name} | ratio" if name != ANCHOR else f"{name} (anchor)" for name in names)
    lines = [
        f"| metric | {head} | target | ok |",
        "|---|" + "---|---|" * (len(names) - 1) + "---|---|---|",
    ]
    for label, key, fmt, check in ROWS:
        cells = []
        for name in names:
            value = results[name][key]
            cells.append(fmt.format(value))
            if name != ANCHOR:
                cells.append(f"{value / results[ANCHOR][key]:.2f}x")
        target, ok = check(results) if check else ("", None)
        verdict = "" if ok is None else ("yes" if ok else "NO")
        lines.append(f"| {label} | {' | '.join(cells)} | {target} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12, help="interleaved rounds")
    ap.add_argument("--block", type=int, default=1000, help="calls per case per round")
    ap.add_argument("--warmup", type=int, default=1000, help="untimed calls per case first")
    ap.add_argument("--size", type=int, default=4400, help="CreateContainer request bytes")
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="add this to the niceness of this process and the plugins (e.g. -15 as root, "
        "to keep other work on a busy machine from dominating the tail)",
    )
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/nri.py needs root (the fake host's device nodes)", file=sys.stderr)
        return 2
    if args.nice:
        os.nice(args.nice)
    with tempfile.TemporaryDirectory() as tmp:
        results, served = measure(args, Path(tmp))
    load = os.getloadavg()[0]
    print(
        f"# NRI CreateContainer round trip: {args.size}-byte request, {args.rounds} rounds of "
        f"{args.block} calls per case, interleaved; Unix socket, each plugin its own process; "
        f"gpu-cdi-nri served {served} requests; load avg {load:.1f} on {os.cpu_count()} CPUs, "
        f"niceness {os.nice(0)}"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
