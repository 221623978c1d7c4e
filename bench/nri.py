"""NRI round trip: gpu-cdi-nri resolving one GPU beside Go plugins on containerd's stub,
measured in the same run, through two load generators.

    .venv/bin/python bench/nri.py [--rounds 10] [--block 1000] [--pods 16] [--nice -15]

Every plugin is its own process attached to its own runtime side; the cases run in
interleaved blocks, each once per round, so load changes on the shared machine hit all of
them alike. The runtime sides:

- containerd's NRI code: bench/nri_go_runtime, NRI 0.6.1's adaptation package (what
  containerd 1.7.24 calls for every NRI event) built from Debian's Go packages. It decodes
  the plugin's answer and merges it into the container's adjustment, as containerd does.
  "1 pod" makes one CreateContainer at a time; "N pods" makes them from N goroutines at once,
  as containerd does for pods created together. The adaptation holds one lock over each
  CreateContainer (NRI 0.6.1 and 0.8.0 alike), so a plugin never has two in flight: the
  throughput containerd gets is one over the round trip, whatever the number of pods.
- a Python stand-in (tests/nri/fake_runtime.py: blocking socket, containerd 1.7.24's framing,
  the answer read but not decoded): the plugin's side alone. Its "16 in flight" pipelines 16
  calls on the connection, which no NRI runtime does.

The cases (the Python plugins run from a regular install of this tree, bench/generate.py's
`regular_install`: the editable install's finder would import pathlib, urllib and ipaddress
into the process):
- gpu-cdi-nri, 1 GPU: resolve mode, logging at info (a line per injection, into a file), the
  spec `gpu-cdi generate` writes for a fake DGX A100; the 4.4 kB request asks for one GPU by
  NVIDIA_VISIBLE_DEVICES=0 (the answer is ~12 kB: 52 mounts, 7 devices, a hook).
- gpu-cdi-nri, no request: the same program, a container that asks for nothing.
- Python no-op: tests/nri/sample_plugin.py (trivial) on nri_plugin.protocol, the stack alone.
- Python, same answer: the same answering gpu-cdi-nri's 1-GPU answer, encoded once (the
  stack, the request's decoding and the answer's bytes, without resolving anything).
- Go, same answer: bench/nri_go_trivial answering gpu-cdi-nri's 1-GPU answer, the best a Go
  plugin resolving the GPU could do.
- Go no-op, the anchor: bench/nri_go_trivial (NRI 0.6.1's stub) answering nothing.

Printed per load generator: latency percentiles, throughput, the plugin's CPU time per
request and its resident memory after the run (gpu-cdi-nri has served >= 10,000 requests by
then), each with its ratio to the Go no-op (and, for 1 GPU, to the Go plugin sending the same
answer). MB = MiB. Targets (issue 14): 1 GPU p50 <= 1.0x the Go no-op, p99 <= 1 ms,
>= 8000 req/s the way containerd drives a plugin (N pods), RSS <= 25 MB. Needs root (the
fake host's device nodes).
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

from bench.generate import regular_install  # noqa: E402
from bench.nri_common import build_spec_dir, go_binary, resolved_answer  # noqa: E402
from bench.proc import cpu_seconds, rss_mb  # noqa: E402
from bench.stats import Estimate, median_ci, percentile  # noqa: E402
from tests.nri.fake_runtime import FakeRuntime, PluginConn, sample_create_request  # noqa: E402

TARGET_P50_RATIO = 1.0
TARGET_P99_US = 1000.0
TARGET_RPS = 8000.0
TARGET_RSS_MB = 25.0
GPU = "gpu-cdi-nri, 1 GPU"
NO_REQUEST = "gpu-cdi-nri, no request"
PY_NOOP = "Python no-op"
PY_SAME = "Python, same answer"
GO_SAME = "Go, same answer"
ANCHOR = "Go no-op"
ADAPTATION = "containerd's NRI code (NRI 0.6.1 adaptation)"
STAND_IN = "Python stand-in (tests/nri/fake_runtime.py)"


class Process:
    """A plugin process and what the kernel says about it."""

    def __init__(self, argv: list[str], log: Path) -> None:
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Driver:
    """One plugin behind one runtime side; `block` makes timed CreateContainer calls."""

    def __init__(self, plugin_argv: list[str], work: Path, tag: str) -> None:
        self.plugin_argv, self.work, self.tag = plugin_argv, work, tag
        self.latencies: list[float] = []  # seconds, one pod at a time
        self.round_p50: list[float] = []  # p50 of each round's block of them
        self.pods_rps: list[float] = []  # per block with many calls at once
        self.calls = 0
        self.cpu = 0.0
        self.plugin: Process

    def timed(self, run: Callable[[], int]) -> None:
        """Run some calls, adding the plugin's CPU time and the number of calls."""
        cpu = self.plugin.cpu_seconds()
        self.calls += run()
        self.cpu += self.plugin.cpu_seconds() - cpu

    def reset(self) -> None:
        self.latencies.clear()
        self.round_p50.clear()
        self.pods_rps.clear()
        self.calls, self.cpu = 0, 0.0


class AdaptationDriver(Driver):
    """bench/nri_go_runtime (NRI's adaptation) driving the plugin."""

    def __init__(self, plugin_argv: list[str], work: Path, tag: str, request: Path) -> None:
        super().__init__(plugin_argv, work, tag)
        socket = str(work / f"{tag}.sock")
        self.runtime = subprocess.Popen(
            [go_binary("nri_go_runtime"), "-socket", socket, "-request", str(request)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not os.path.exists(socket):
            if self.runtime.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{tag}: nri_go_runtime did not listen on {socket}")
            time.sleep(0.01)
        self.plugin = Process([*plugin_argv, "--socket", socket], work / f"{tag}.log")
        if self.command_line() != "connected":
            raise SystemExit(f"{tag}: the plugin did not connect (see {work / tag}.log)")

    def command_line(self, command: str | None = None) -> str:
        assert self.runtime.stdin is not None and self.runtime.stdout is not None
        if command is not None:
            self.runtime.stdin.write(command + "\n")
            self.runtime.stdin.flush()
        line = self.runtime.stdout.readline().strip()
        if line.startswith("error"):
            raise SystemExit(f"{self.tag}: {line}")
        return line

    def run(self, n: int, pods: int) -> tuple[float, list[float]]:
        """`n` calls from `pods` goroutines: wall seconds, each call's latency (seconds)."""
        fields = self.command_line(f"run {n} {pods}").split()
        return int(fields[1]) / 1e9, [int(x) / 1e9 for x in fields[2:]]

    def shape(self) -> str:
        """ENV MOUNTS DEVICES HOOKS of the merged adjustment."""
        return self.command_line("shape").partition(" ")[2]

    def block(self, n: int, pods: int) -> None:
        def one_pod() -> int:
            latencies = self.run(n, 1)[1]
            self.latencies.extend(latencies)
            self.round_p50.append(statistics.median(latencies))
            return n

        def many_pods() -> int:
            wall, _ = self.run(n, pods)
            self.pods_rps.append(n / wall)
            return n

        self.timed(one_pod)
        self.timed(many_pods)

    def close(self) -> None:
        self.plugin.close()
        assert self.runtime.stdin is not None
        self.runtime.stdin.close()
        self.runtime.wait(10)


class StandInDriver(Driver):
    """tests/nri/fake_runtime.py driving the plugin from this process."""

    def __init__(self, plugin_argv: list[str], work: Path, tag: str, request: Path) -> None:
        super().__init__(plugin_argv, work, tag)
        socket = str(work / f"{tag}.sock")
        self.payload = request.read_bytes()
        self.runtime = FakeRuntime(socket)
        self.plugin = Process([*plugin_argv, "--socket", socket], work / f"{tag}.log")
        self.conn: PluginConn = self.runtime.accept(timeout=60)
        self.conn.handshake()

    def block(self, n: int, pods: int) -> None:
        conn, payload, clock, lat = self.conn, self.payload, time.perf_counter, self.latencies

        def one_at_a_time() -> int:
            for _ in range(n):
                start = clock()
                answer = conn.call("CreateContainer", payload)
                lat.append(clock() - start)
                if answer.code:
                    raise SystemExit(f"{self.tag}: answered {answer.code}: {answer.message}")
            self.round_p50.append(statistics.median(lat[-n:]))
            return n

        def pipelined() -> int:
            start = clock()
            window = [conn.request("CreateContainer", payload) for _ in range(pods)]
            for _ in range(n):
                conn.wait_answer(window.pop(0))
                window.append(conn.request("CreateContainer", payload))
            for stream in window:
                conn.wait_answer(stream)
            self.pods_rps.append((n + pods) / (clock() - start))
            return n + pods

        self.timed(one_at_a_time)
        self.timed(pipelined)

    def close(self) -> None:
        self.plugin.close()
        self.runtime.close()


Results = dict[str, dict[str, float]]


def summary(driver: Driver) -> dict[str, float]:
    lat = driver.latencies
    return {
        "p50_us": percentile(lat, 50) * 1e6,
        "p90_us": percentile(lat, 90) * 1e6,
        "p99_us": percentile(lat, 99) * 1e6,
        "mean_us": statistics.fmean(lat) * 1e6,
        "rps": len(lat) / sum(lat),
        "rps_pods": statistics.median(driver.pods_rps),
        "cpu_us": driver.cpu / driver.calls * 1e6,
        "rss_mb": driver.plugin.rss_mb(),
    }


def measure(args: argparse.Namespace, work: Path) -> tuple[dict[str, Results], int, str]:
    spec_dir = build_spec_dir(work)
    request = sample_create_request(args.size)
    (work / "plain.req").write_bytes(request.SerializeToString())
    request.container.env.append("NVIDIA_VISIBLE_DEVICES=0")
    (work / "gpu.req").write_bytes(request.SerializeToString())
    (work / "answer").write_bytes(resolved_answer(spec_dir))
    installed = regular_install(work)  # no editable-install finder (pathlib, urllib, ...)
    ours = [str(installed / "gpu-cdi-nri"), "--spec-dir", str(spec_dir)]
    ours += ["--mode", "resolve", "--log-level", "info", "--plugin-idx", "50"]
    # (env execs the program: the pid is the plugin's)
    py_noop = ["env", f"PYTHONPATH={REPO}", str(installed / "python"), "-m"]
    py_noop += ["tests.nri.sample_plugin", "--mode", "trivial"]
    go = go_binary("nri_go_trivial")
    # case -> (plugin argv, request)
    cases = {
        GPU: (ours, "gpu.req"),
        NO_REQUEST: (ours, "plain.req"),
        PY_NOOP: (py_noop, "plain.req"),
        PY_SAME: ([*py_noop, "--answer", str(work / "answer")], "plain.req"),
        GO_SAME: ([go, "-answer", str(work / "answer")], "plain.req"),
        ANCHOR: ([go], "plain.req"),
    }
    kinds: dict[str, type[Driver]] = {ADAPTATION: AdaptationDriver, STAND_IN: StandInDriver}
    drivers: dict[str, dict[str, Driver]] = {kind: {} for kind in kinds}
    try:
        for kind, cls in kinds.items():
            for i, (case, (argv, req)) in enumerate(cases.items()):
                drivers[kind][case] = cls(argv, work, f"{cls.__name__}-{i}", work / req)
        shape = drivers[ADAPTATION][GPU].shape()  # type: ignore[attr-defined]
        for same in (GO_SAME, PY_SAME):
            if shape != drivers[ADAPTATION][same].shape():  # type: ignore[attr-defined]
                raise SystemExit(f"{same}: the answer differs from gpu-cdi-nri's")
        everyone = [d for by_case in drivers.values() for d in by_case.values()]
        for driver in everyone:  # imports, caches, the allocator; then start counting
            driver.block(args.warmup, args.pods)
            driver.reset()
        for _ in range(args.rounds):
            for driver in everyone:
                driver.block(args.block, args.pods)
        results = {
            kind: {case: summary(d) for case, d in by_case.items()}
            for kind, by_case in drivers.items()
        }
        for kind, by_case in drivers.items():
            # the p50 ratio of each round's blocks, taken close together in time
            pairs = zip(by_case[GPU].round_p50, by_case[ANCHOR].round_p50, strict=True)
            ratio = median_ci([ours / anchor for ours, anchor in pairs])
            results[kind][GPU].update(
                p50_ratio=ratio.median, p50_ratio_low=ratio.low, p50_ratio_high=ratio.high
            )
        served = drivers[ADAPTATION][GPU].calls + 2 * args.warmup
        for kind, by_case in drivers.items():
            log = work / f"{by_case[GPU].tag}.log"
            injected = sum("msg=injected" in line for line in log.read_text().splitlines())
            if injected < args.rounds * args.block:
                raise SystemExit(f"{kind}: gpu-cdi-nri logged {injected} injections, too few")
        return results, served, shape
    finally:
        for by_case in drivers.values():
            for driver in by_case.values():
                driver.close()


Check = Callable[[Results], tuple[str, str]]


def p50_check(r: Results) -> tuple[str, str]:
    g = r[GPU]
    ratio = Estimate(g["p50_ratio"], g["p50_ratio_low"], g["p50_ratio_high"], 0)
    return (
        f"1 GPU <= {TARGET_P50_RATIO:.1f}x Go no-op (per round {ratio.median:.2f}x, "
        f"95% CI {ratio.low:.2f}..{ratio.high:.2f})",
        ratio.verdict(TARGET_P50_RATIO),
    )


def met(ok: bool) -> str:
    return "met" if ok else "missed"


# (label, key, format, the target's check; throughput's for the adaptation's table only)
ROWS: list[tuple[str, str, str, Check | None]] = [
    ("p50 latency", "p50_us", "{:.0f} us", p50_check),
    ("p90 latency", "p90_us", "{:.0f} us", None),
    (
        "p99 latency",
        "p99_us",
        "{:.0f} us",
        lambda r: (f"1 GPU <= {TARGET_P99_US:.0f} us", met(r[GPU]["p99_us"] <= TARGET_P99_US)),
    ),
    ("mean latency", "mean_us", "{:.0f} us", None),
    ("throughput, 1 pod at a time", "rps", "{:.0f}/s", None),
    (
        "throughput, {pods}",
        "rps_pods",
        "{:.0f}/s",
        lambda r: (f"1 GPU >= {TARGET_RPS:.0f}/s", met(r[GPU]["rps_pods"] >= TARGET_RPS)),
    ),
    ("plugin CPU per request", "cpu_us", "{:.0f} us", None),
    (
        "plugin RSS after the run",
        "rss_mb",
        "{:.1f} MB",
        lambda r: (f"1 GPU <= {TARGET_RSS_MB:.0f} MB", met(r[GPU]["rss_mb"] <= TARGET_RSS_MB)),
    ),
]


def table(results: Results, many: str, pods_target: bool) -> str:
    """Markdown: each figure beside its ratio to the Go no-op (and 1 GPU's to the Go plugin
    sending the same answer); the targets where they apply."""
    head = f"| metric | {GPU} | / {ANCHOR} | / {GO_SAME} |"
    sep = "|---|---|---|---|"
    others = [name for name in results if name not in (GPU, ANCHOR)]
    for name in others:
        head += f" {name} | / {ANCHOR} |"
        sep += "---|---|"
    head += f" {ANCHOR} (anchor) | target | met |"
    sep += "---|---|---|"
    lines = [head, sep]
    for label, key, fmt, check in ROWS:
        anchor = results[ANCHOR][key]
        gpu = results[GPU][key]
        cells = [label.format(pods=many), fmt.format(gpu), f"{gpu / anchor:.2f}x"]
        cells.append(f"{gpu / results[GO_SAME][key]:.2f}x")
        for name in others:
            value = results[name][key]
            cells += [fmt.format(value), f"{value / anchor:.2f}x"]
        cells.append(fmt.format(anchor))
        target, verdict = ("", "")
        if check is not None and (key != "rps_pods" or pods_target):
            target, verdict = check(results)
        cells += [target, verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    ap.add_argument("--block", type=int, default=600, help="calls per case, block and round")
    ap.add_argument("--warmup", type=int, default=600, help="untimed calls per case first")
    ap.add_argument("--pods", type=int, default=16, help="calls made at once in the 2nd block")
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
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        results, served, shape = measure(args, Path(tmp))
    load = max(load, os.getloadavg()[0])
    env, mounts, devices, hooks = shape.split()
    print(
        f"# NRI CreateContainer round trip: {args.size}-byte request, {args.rounds} rounds of "
        f"{args.block} calls per case and block, interleaved; Unix socket, each plugin its own "
        f"process; the 1-GPU answer: {env} env, {mounts} mounts, {devices} devices, {hooks} "
        f"hook; gpu-cdi-nri served {served} requests; load avg up to {load:.1f} on "
        f"{os.cpu_count()} CPUs, niceness {os.nice(0)}"
    )
    print(f"\n## Driven by {ADAPTATION}")
    print(table(results[ADAPTATION], f"{args.pods} pods at once", pods_target=True))
    print(f"\n## Driven by the {STAND_IN}: the plugin's side alone")
    print(table(results[STAND_IN], f"{args.pods} in flight (pipelined)", pods_target=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
