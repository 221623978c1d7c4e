"""Benchmark of the gpu-cdi NRI plugin inside containerd. Prints two tables.

Run (root; needs the tests/e2e packages, gcc for the fake NVML):
    .venv/bin/python bench/nri_gpu.py [--rounds 30] [--block 20] [--containerd 1.7 ...]
                                      [--inproc-n 5000] [--stack] [--skip-containerd]

1. Time inside the plugin for one CreateContainer (decode the request, find the requests,
   check the policy, resolve, build the adjustment, encode the response), for 1 and 8 GPUs and
   `all`, with the spec `gpu-cdi generate` writes for a fake DGX A100. "warm" is the usual
   case (the adjustment for a device set is cached until the spec dirs change), "cold" drops
   the cache before every call. Target: 8 GPUs p99 <= 300 us.
   With --stack, also the whole receive path in the process: a CreateContainer as the
   runtime frames it (bench/nri.py's 4.4 kB request, ttrpc in two mux frames) handed to the
   plugin's NriTransport as a socket read, through mux, ttrpc, the stub and the plugin, to the
   framed answer written to a transport that keeps it (the log line deferred, as in
   production).
2. containerd CreateContainer latency (CRI, blocking, each container removed at once) on
   containerd 1.7.24 and 2.1, roots on tmpfs, the same spec in containerd's CDI dir. Per
   release one containerd instance per role: no plugin (a plain container; one asking
   containerd's own CDI for nvidia.com/gpu=0 through CRI CDI_devices: the anchor),
   gpu-cdi-nri in resolve mode (NVIDIA_VISIBLE_DEVICES=0; a container asking nothing), on 2.1
   gpu-cdi-nri in native mode (containerd 1.7.24 drops CDI names from plugins), and for each
   mode a Go plugin on containerd's stub answering gpu-cdi-nri's bytes (bench/nri_go_trivial
   -answer): what the NRI round trip and containerd's handling of that answer cost whoever
   the plugin is, so that "beside the Go plugin" is what is gpu-cdi-nri's own. Every
   iteration creates one container of each case on each release, in rotated order, so the
   figures compared are taken milliseconds apart; each round the plugins move to the next
   instance, so a difference between two instances cancels out over the rounds.
   The figure for a case beside its anchor: per round, the median of the per-iteration
   differences; over the rounds, their median with a distribution-free 95% confidence
   interval. Targets (issue 14): resolve <= own CDI + 0.5 ms, native <= own CDI + 0.3 ms;
   "met" when the whole interval is under the target, "missed" when all of it is above,
   "undecided" else (the machine was too noisy to tell: more rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.nri_common import GPU0, REPO, build_spec_dir, go_binary, native_answer, resolved_answer
from bench.stats import Estimate, median_ci, percentile
from cdi.registry import Registry
from nri_plugin.config import Config
from nri_plugin.log import setup_logging
from nri_plugin.plugin import GpuCdiPlugin
from nri_plugin.protocol import api

INPROC_TARGET_US = 300.0
TARGET_RESOLVE_MS = 0.5  # resolve mode beside containerd's own CDI (issue 14)
TARGET_NATIVE_MS = 0.3  # native mode beside containerd's own CDI (issue 14)


def request_bytes(env: str) -> bytes:
    """A CreateContainerRequest as containerd 1.7.24 sends it (typical env, mounts, rules)."""
    req = api.CreateContainerRequest()
    req.pod.id, req.pod.name, req.pod.namespace, req.pod.uid = "p" * 64, "bench", "default", "u"
    req.pod.annotations["io.kubernetes.cri.sandbox-name"] = "bench"
    c = req.container
    c.id, c.pod_sandbox_id, c.name = "c" * 64, "p" * 64, "ctr"
    c.annotations["io.kubernetes.cri.container-type"] = "container"
    c.annotations["io.kubernetes.cri.container-name"] = "ctr"
    c.args.extend(["sh", "-c", "true"])
    c.env.extend(
        ["PATH=/usr/local/bin:/usr/bin:/bin", "HOSTNAME=bench", f"NVIDIA_VISIBLE_DEVICES={env}"]
    )
    for dest in (
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
        "/etc/hosts",
    ):
        c.mounts.add(destination=dest, type="bind", source=dest, options=["rbind", "ro"])
    c.linux.resources.devices.add(allow=False, access="rwm")
    return bytes(req.SerializeToString())


Result = tuple[str, str, list[float], list[float]]


class _KeptWrites(asyncio.Transport):
    """A transport that keeps the last write (--stack)."""

    def __init__(self) -> None:
        super().__init__()
        self.last = b""
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.last = bytes(data)
        self.writes += 1

    def is_closing(self) -> bool:
        return False


def stack(spec_dir: Path, n: int) -> list[tuple[str, list[float], int]]:
    """Per-request wall times (us) of the whole receive path, and the answer's size."""
    from nri_plugin.protocol.gen import ttrpc_pb2
    from nri_plugin.protocol.stub import PLUGIN_SERVICE, Stub
    from nri_plugin.protocol.transport import NriTransport
    from tests.nri.fake_runtime import MUX, REQUEST, TTRPC, sample_create_request

    request = sample_create_request()
    plain = request.SerializeToString()
    request.container.env.append("NVIDIA_VISIBLE_DEVICES=0")
    cases = [("1 GPU", request.SerializeToString()), ("no request", plain)]

    async def run() -> list[tuple[str, list[float], int]]:
        registry = Registry([str(spec_dir)])
        plugin = GpuCdiPlugin(Config(spec_dirs=(str(spec_dir),)), registry)
        await plugin.configure(
            api.ConfigureRequest(runtime_name="containerd", runtime_version="1.7.24~ds1")
        )
        handler = setup_logging("info")
        handler.stream = open(os.devnull, "w")  # noqa: SIM115
        deferred: list[Callable[[], None]] = []
        handler.defer = deferred.append  # written after the answer, as the CLI does
        stub = Stub(plugin, name="bench", idx="50", environ={})
        results = []
        for label, payload in cases:
            body = ttrpc_pb2.Request(
                service=PLUGIN_SERVICE,
                method="CreateContainer",
                payload=payload,
                timeout_nano=2_000_000_000,
            ).SerializeToString()
            proto = NriTransport(stub._dispatch)
            kept = _KeptWrites()
            proto.connection_made(kept)
            buffer = proto.get_buffer(-1)
            wires = []
            for i in range(n + 200):
                message = TTRPC.pack(len(body), 2 * i + 1, REQUEST, 0) + body
                parts = [message[:4096], message[4096:]]  # as containerd splits it
                wires.append(b"".join(MUX.pack(1, len(p)) + p for p in parts if p))
            gc.collect()
            gc.freeze()
            times: list[float] = []
            for i, wire in enumerate(wires):
                size = len(wire)
                buffer[:size] = wire
                t0 = time.perf_counter_ns()
                proto.buffer_updated(size)
                dt = time.perf_counter_ns() - t0
                for flush in deferred:
                    flush()
                deferred.clear()
                if i >= 200:  # warm-up
                    times.append(dt / 1e3)
            assert kept.writes == len(wires)
            results.append((label, times, len(kept.last)))
        registry.close()
        return results

    return asyncio.run(run())


def print_stack(results: list[tuple[str, list[float], int]]) -> None:
    print("\n## The whole receive path in the process (us; socket read to framed answer)")
    print("| case | n | p10 | p50 | p90 | p99 | answer bytes |")
    print("|---|---|---|---|---|---|---|")
    for label, times, size in results:
        cells = " | ".join(f"{percentile(times, p):.1f}" for p in (10, 50, 90, 99))
        print(f"| {label} | {len(times)} | {cells} | {size} |")


def inproc(spec_dir: Path, n: int) -> list[Result]:
    """Per-call handling times (wall, CPU; us) for each case."""
    registry = Registry([str(spec_dir)])
    plugin = GpuCdiPlugin(Config(spec_dirs=(str(spec_dir),)), registry)
    asyncio.run(
        plugin.configure(
            api.ConfigureRequest(runtime_name="containerd", runtime_version="1.7.24~ds1")
        )
    )
    # as in production: info level, one logfmt line per injection (here into /dev/null)
    setup_logging("info")
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # noqa: SIM115
    gc.freeze()  # as the CLI does once loaded
    cases = [("1 GPU", "0"), ("8 GPUs", "0,1,2,3,4,5,6,7"), ("all", "all")]
    results = []
    for label, env in cases:
        payload = request_bytes(env)
        for mode in ("warm", "cold"):
            times: list[float] = []
            cpu: list[float] = []
            for i in range(n + 200):
                if mode == "cold":
                    plugin._cache.clear()
                c0 = time.thread_time_ns()
                t0 = time.perf_counter_ns()
                req = api.CreateContainerRequest.FromString(payload)
                response = plugin.adjust(req.pod, req.container)
                out = response.SerializeToString()
                dt = time.perf_counter_ns() - t0
                dc = time.thread_time_ns() - c0
                if i >= 200:  # warm-up
                    times.append(dt / 1e3)
                    cpu.append(dc / 1e3)
            assert out
            results.append((label, mode, times, cpu))
    registry.close()
    return results


def print_inproc(results: list[Result]) -> None:
    print("## Time inside the plugin per CreateContainer (us; wall clock, and CPU time of the")
    print("## thread, which leaves out time other processes took the core)")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("| case | cache | n | p50 | p90 | p99 | CPU p50 | CPU p99 | target (wall p99) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, mode, times, cpu in results:
        p50, p90, p99 = (percentile(times, p) for p in (50, 90, 99))
        c50, c99 = (percentile(cpu, p) for p in (50, 99))
        target = ""
        if label == "8 GPUs" and mode == "warm":
            target = (
                f"p99 <= {INPROC_TARGET_US:.0f}: {'OK' if p99 <= INPROC_TARGET_US else 'MISSED'}"
            )
        print(
            f"| {label} | {mode} | {len(times)} | {p50:.0f} | {p90:.0f} | {p99:.0f} "
            f"| {c50:.0f} | {c99:.0f} | {target} |"
        )


@attrs.frozen
class Case:
    """One kind of container, created on the containerd instance that plays `role`."""

    label: str
    role: str  # a key of ROLES
    env: tuple[tuple[str, str], ...] = ()
    cdi_devices: tuple[str, ...] = ()
    devices: bool = True  # whether the container must get /dev/nvidia0


# role -> (what is attached to that instance's NRI socket, the NRI plugin name)
ROLES = {
    "bare": ("nothing", ""),
    "resolve": ("gpu-cdi-nri --mode resolve", "gpu-cdi"),
    "native": ("gpu-cdi-nri --mode native", "gpu-cdi"),
    "go-resolve": ("a Go plugin answering gpu-cdi-nri's resolve-mode bytes", "go-echo"),
    "go-native": ("a Go plugin answering gpu-cdi-nri's native-mode bytes", "go-echo"),
}
ASKS_GPU0 = (("NVIDIA_VISIBLE_DEVICES", "0"),)
PLAIN = Case("no plugin", "bare", devices=False)
OWN_CDI = Case("containerd's own CDI", "bare", cdi_devices=(GPU0,))
RESOLVE = Case("gpu-cdi-nri resolve", "resolve", ASKS_GPU0)
NO_REQUEST = Case("gpu-cdi-nri, no request", "resolve", devices=False)
NATIVE = Case("gpu-cdi-nri native", "native", ASKS_GPU0)
GO_RESOLVE = Case("Go plugin, same resolve answer", "go-resolve", ASKS_GPU0)
GO_NATIVE = Case("Go plugin, same native answer", "go-native", ASKS_GPU0)
# containerd release line -> the cases measured on it (native mode only where the runtime
# resolves the CDI names a plugin hands it: containerd 1.7.24 drops them)
CASES = {
    "1.7": (PLAIN, OWN_CDI, RESOLVE, NO_REQUEST, GO_RESOLVE),
    "2.1": (PLAIN, OWN_CDI, RESOLVE, NO_REQUEST, NATIVE, GO_RESOLVE, GO_NATIVE),
}
# --parts: a Go plugin answering one part of the resolve answer (or nothing, one env
# variable, the whole answer with its mounts reversed), to see what containerd does with each:
# part -> (what it answers, copy it from the full answer, whether it gets /dev/nvidia0)
Keep = Callable[[api.ContainerAdjustment, api.ContainerAdjustment], None]  # (full, part)


def _reversed_mounts(full: api.ContainerAdjustment, part: api.ContainerAdjustment) -> None:
    part.CopyFrom(full)
    part.mounts.reverse()


PARTS: dict[str, tuple[str, Keep, bool]] = {
    "mounts": (
        "the resolve answer's mounts",
        lambda full, part: part.mounts.extend(full.mounts),
        False,
    ),
    "devices": (
        "the resolve answer's devices",
        lambda full, part: part.linux.devices.extend(full.linux.devices),
        True,
    ),
    "hooks": (
        "the resolve answer's hook",
        lambda full, part: part.hooks.CopyFrom(full.hooks),
        False,
    ),
    "one env": ("one env variable", lambda full, part: part.env.add(key="BENCH", value="1"), False),
    # gpu-cdi-nri sends mounts in the order containerd re-sorts them into; this is the same
    # answer with the mounts reversed: what that order saves containerd's sort
    "reversed mounts": (
        "the resolve answer with its mounts reversed",
        _reversed_mounts,
        True,
    ),
    "empty": ("an empty adjustment", lambda full, part: None, False),
}


def part_case(part: str) -> Case:
    """The case of a Go plugin answering only `part` (a key of PARTS)."""
    what, _, devices = PARTS[part]
    role = "go-" + part.replace(" ", "-")
    ROLES.setdefault(role, (f"a Go plugin answering {what}", "go-echo"))
    return Case(f"Go plugin, {part}", role, ASKS_GPU0, devices=devices)


# case -> (its target beside containerd's own CDI in ms, the Go plugin sending the same bytes)
TARGETS = {RESOLVE: (TARGET_RESOLVE_MS, GO_RESOLVE), NATIVE: (TARGET_NATIVE_MS, GO_NATIVE)}


class Release:
    """One containerd release line: an instance per role; the plugins move between them."""

    def __init__(
        self, version: str, stack: contextlib.ExitStack, work: Path, parts: Sequence[str] = ()
    ) -> None:
        from tests.e2e.harness import Containerd

        self.version = version
        self.cases = CASES[version] + tuple(part_case(part) for part in parts)
        self.roles = [role for role in ROLES if any(case.role == role for case in self.cases)]
        self.work = work
        self.instances = []
        self.pods = []
        self.cris = []
        spec = (work / "cdi" / "nvidia.yaml").read_bytes()
        for _ in self.roles:
            ctd = stack.enter_context(Containerd(version=version))
            (ctd.cdi_dir / "nvidia.yaml").write_bytes(spec)
            cri = stack.enter_context(ctd.cri())
            self.instances.append(ctd)
            self.cris.append(cri)
            self.pods.append(cri.run_pod("bench"))
        self.label = f"containerd {self.cris[0].version().runtime_version}"
        self.configs = {
            case: self.cris[0].container_config(
                "bench", command=["true"], env=dict(case.env), cdi_devices=case.cdi_devices
            )
            for case in self.cases
        }
        self.plugins: list[subprocess.Popen[bytes]] = []
        self.where: dict[str, int] = {}
        # case -> per round, the samples in ms (one per iteration, in order)
        self.samples: dict[Case, list[list[float]]] = {case: [] for case in self.cases}

    def argv(self, role: str, at: int) -> list[str]:
        ctd = self.instances[at]
        name = ROLES[role][1]
        if role.startswith("go-"):
            answer = self.work / f"{role}.answer"
            go = go_binary("nri_go_trivial")
            return [go, "-socket", ctd.nri_socket, "-name", name, "-answer", str(answer)]
        return [
            *(sys.executable, "-m", "nri_plugin.cli", "--socket", ctd.nri_socket),
            *("--spec-dir", str(ctd.cdi_dir), "--plugin-name", name, "--mode", role),
            *("--log-level", "info"),
        ]

    def place(self, round_no: int) -> None:
        """Put the plugins on this round's instances: each role visits every instance in
        turn, so what differs between two instances of the same release cancels out."""
        self.stop_plugins()
        k = len(self.roles)
        self.where = {role: (i + round_no) % k for i, role in enumerate(self.roles)}
        started = []
        with open(self.work / f"plugins-{self.version}.log", "ab") as log:
            for role, at in self.where.items():
                if role == "bare":
                    continue
                since = self.instances[at].log_size()
                proc = subprocess.Popen(
                    self.argv(role, at), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
                )
                self.plugins.append(proc)
                started.append((role, at, since))
        for role, at, since in started:
            self.instances[at].wait_plugin_connected(ROLES[role][1], since=since, timeout=30)

    def stop_plugins(self) -> None:
        for proc in self.plugins:
            proc.terminate()
        for proc in self.plugins:
            proc.wait(10)
        self.plugins = []

    def create(self, case: Case) -> tuple[float, str]:
        """Create (timed, ms) a container of `case`; returns the time and its id."""
        at = self.where[case.role]
        start = time.perf_counter()
        cid = self.cris[at].create_from_config(self.pods[at], self.configs[case])
        return (time.perf_counter() - start) * 1e3, cid

    def remove(self, case: Case, cid: str) -> None:
        self.cris[self.where[case.role]].remove_container(cid)

    def check(self) -> None:
        """Each case gets /dev/nvidia0 exactly when it should (else the figures lie)."""
        for case in self.cases:
            _, cid = self.create(case)
            spec = self.cris[self.where[case.role]].oci_spec(cid)
            self.remove(case, cid)
            paths = {d["path"] for d in spec.get("linux", {}).get("devices", [])}
            if ("/dev/nvidia0" in paths) != case.devices:
                raise SystemExit(
                    f"{self.label}, {case.label}: /dev/nvidia0 "
                    f"{'missing from' if case.devices else 'present in'} the container's spec"
                )

    def injections(self) -> int:
        log = self.work / f"plugins-{self.version}.log"
        return sum("msg=injected" in line for line in log.read_text().splitlines())


def containerd_latency(
    versions: list[str], rounds: int, block: int, warmup: int, parts: Sequence[str] = ()
) -> None:
    """CreateContainer latency on each release, every case interleaved (module docstring)."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        spec_dir = build_spec_dir(work)
        resolved = resolved_answer(spec_dir)
        (work / "go-resolve.answer").write_bytes(resolved)
        (work / "go-native.answer").write_bytes(native_answer())
        for part in parts:
            answer = api.ContainerAdjustment()
            PARTS[part][1](api.ContainerAdjustment.FromString(resolved), answer)
            (work / f"{part_case(part).role}.answer").write_bytes(answer.SerializeToString())
        releases = [Release(v, stack, work, parts) for v in versions]
        stack.callback(lambda: [r.stop_plugins() for r in releases])
        slots = [(release, case) for release in releases for case in release.cases]
        load = [os.getloadavg()[0]]
        for round_no in range(rounds):
            for release in releases:
                release.place(round_no)
                if round_no == 0:
                    release.check()
            for _ in range(warmup):
                for release, case in slots:
                    release.remove(case, release.create(case)[1])
            taken: dict[tuple[Release, Case], list[float]] = {slot: [] for slot in slots}
            for i in range(block):
                # rotate the order each iteration: no case always follows the same one
                for release, case in slots[i % len(slots) :] + slots[: i % len(slots)]:
                    ms, cid = release.create(case)
                    release.remove(case, cid)
                    taken[release, case].append(ms)
            for (release, case), samples in taken.items():
                release.samples[case].append(samples)
            load.append(os.getloadavg()[0])
        for release in releases:
            release.stop_plugins()
        print("\n## containerd CreateContainer latency, nvidia.com/gpu=0 (1 GPU)")
        print(
            f"{rounds} rounds x {block} iterations, each creating (then removing) one container "
            f"of every case on every release, order rotated; roots on tmpfs; load avg "
            f"{min(load):.1f}..{max(load):.1f} on {os.cpu_count()} CPUs. Roles: "
            + "; ".join(f"{role}: {what}" for role, (what, _) in ROLES.items())
        )
        print(
            "Each figure beside an anchor: per round the median of the per-iteration "
            "differences, over the rounds their median (95% CI), in ms."
        )
        for release in releases:
            print_release(release)


def paired(release: Release, case: Case, anchor: Case) -> Estimate:
    """Median over rounds of each round's median per-iteration difference case - anchor."""
    per_round = [
        statistics.median(a - b for a, b in zip(xs, ys, strict=True))
        for xs, ys in zip(release.samples[case], release.samples[anchor], strict=True)
    ]
    return median_ci(per_round)


def print_release(release: Release) -> None:
    print(f"\n### {release.label} ({release.injections()} injections logged by gpu-cdi-nri)")
    print(
        "| case | n | p50 ms | p90 ms | beside no plugin | beside own CDI "
        "| beside the Go plugin, same bytes | target | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|---|")

    def cell(case: Case, anchor: Case | None) -> str:
        if anchor is None or case in (anchor, PLAIN) or anchor not in release.cases:
            return ""
        e = paired(release, case, anchor)
        return f"{e.median:+.2f} ({e.low:+.2f}..{e.high:+.2f})"

    for case in release.cases:
        flat = [x for block in release.samples[case] for x in block]
        limit, go = TARGETS.get(case, (None, None))
        cells = [case.label, str(len(flat))]
        cells += [f"{percentile(flat, p):.2f}" for p in (50, 90)]
        cells += [cell(case, PLAIN), cell(case, OWN_CDI), cell(case, go)]
        if limit is not None:
            cells += [f"own CDI + {limit} ms", paired(release, case, OWN_CDI).verdict(limit)]
        else:
            cells += ["", ""]
        print("| " + " | ".join(cells) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=30,
        help="rounds (a multiple of 15 puts every plugin on every instance equally often: "
        "3 instances for 1.7, 5 for 2.1)",
    )
    ap.add_argument("--block", type=int, default=20, help="iterations per round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations after a move")
    ap.add_argument(
        "--containerd",
        action="append",
        choices=sorted(CASES),
        help="release line to measure (repeatable; default: all)",
    )
    ap.add_argument(
        "--parts",
        action="append",
        choices=list(PARTS),
        help="also a Go plugin answering only this part of the resolve answer (repeatable): "
        "what containerd does with each",
    )
    ap.add_argument("--inproc-n", type=int, default=5000)
    ap.add_argument(
        "--stack", action="store_true", help="also time the whole receive path in the process"
    )
    ap.add_argument("--skip-containerd", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/nri_gpu.py needs root (fake host device nodes, containerd)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        spec_dir = build_spec_dir(Path(tmp))
        print_inproc(inproc(spec_dir, args.inproc_n))
        if args.stack:
            print_stack(stack(spec_dir, args.inproc_n))
    if not args.skip_containerd:
        versions = args.containerd or sorted(CASES)
        containerd_latency(versions, args.rounds, args.block, args.warmup, args.parts or ())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
