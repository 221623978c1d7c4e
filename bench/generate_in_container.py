"""Benchmark: `gpu-cdi generate` inside the DaemonSet's container (the node's / at /host,
`--host-root=/host`) against the same generation on the node (issue 17: "costs the same").

One fake dgx-a100-mig node. Each `gpu-cdi generate` process is timed by the same loop, run
where the process runs (inside the container for the container row), so podman's own start-up
is not counted. CPU time (user + system) is the fair measure on a shared machine: the
container's own cgroup gets its own CPU share under load, which shortens its wall time. Blocks
alternate (the order rotates each round); ratios are against the node row of the same run.
Needs root, podman, busybox and the fake NVML (as `make test`).

Run: .venv/bin/python bench/generate_in_container.py [--runs N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.deploy.test_in_container import IMAGE, _container, podman_run_args  # noqa: E402
from tests.e2e import interpreter  # noqa: E402
from tests.e2e.podman import Podman  # noqa: E402

# Runs `python -m cdi generate ARGS` N times (one warm-up) and prints, as JSON, the wall time and
# the CPU time (user + system, from the children's rusage) of each run in ms.
LOOP = """
import json, resource, subprocess, sys, time
runs, args = int(sys.argv[1]), sys.argv[2:]
out = {"wall": [], "cpu": []}
def cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
for i in range(runs + 1):
    start, used = time.perf_counter(), cpu()
    subprocess.run([sys.executable, "-m", "cdi", "generate", *args], check=True)
    if i:
        out["wall"].append((time.perf_counter() - start) * 1000)
        out["cpu"].append((cpu() - used) * 1000)
print(json.dumps(out))
"""


def main() -> int:
    """Build the node and the image, time the three ways alternately, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    from gpu_cdi_fakehost.builder import build_host

    with tempfile.TemporaryDirectory() as base:
        host = build_host("dgx-a100-mig", Path(base) / "node")
        out = Path(base) / "cdi"
        out.mkdir()
        podman = Podman("podman", Path(base) / "podman")
        podman.import_layer(interpreter.image_layer(), IMAGE)
        generate = _container("generate")
        command = generate["command"][2:]  # after `gpu-cdi generate`
        output = f"--output={out}/nvidia.yaml"
        env = {**os.environ, "FAKE_NVML_TOPOLOGY": str(host.nvml_topology_file)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        on_node = [*host.generate_argv[2:], output]
        mounted = [f"--host-root={host.root}", output]
        volumes, options, _ = podman_run_args(
            generate,
            {"/": str(host.root), "/var/run/cdi": str(out)},
            [],
            {"FAKE_NVML_TOPOLOGY": "/host/.fakehost/nvml-topology.txt"},
        )
        in_container = podman.run_args(
            IMAGE,
            [sys.executable, "-c", LOOP, str(args.runs), *command],
            volumes=volumes,
            options=["--rm", *options],
        )

        def here(argv: list[str]) -> dict[str, list[float]]:
            proc = subprocess.run(
                [sys.executable, "-c", LOOP, str(args.runs), *argv],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            times: dict[str, list[float]] = json.loads(proc.stdout)
            return times

        runs: dict[str, Callable[[], dict[str, list[float]]]] = {
            "node": lambda: here(on_node),
            "mounted": lambda: here(mounted),
            "container": lambda: json.loads(podman("run", *in_container, timeout=600).stdout),
        }
        rows = {key: {"wall": [], "cpu": []} for key in runs}
        order = list(runs)
        for _ in range(args.rounds):
            for key in order:
                for kind, times in runs[key]().items():
                    rows[key][kind] += times
            order = order[1:] + order[:1]  # no way is always first after a pause

    names = {
        "node": "on the node (--driver-root/--dev-root/--proc-sys-root DIR)",
        "mounted": "the node read through --host-root DIR, here",
        "container": "DaemonSet's command in podman, node at /host",
    }
    wall0, cpu0 = (statistics.median(rows["node"][kind]) for kind in ("wall", "cpu"))
    print(f"gpu-cdi generate, dgx-a100-mig, {args.rounds} x {args.runs} runs each")
    print("| where | CPU ms (median) | ratio | wall ms (median) | ratio | wall min ms |")
    print("|---|---|---|---|---|---|")
    for key, row in rows.items():
        wall, cpu = statistics.median(row["wall"]), statistics.median(row["cpu"])
        print(
            f"| {names[key]} | {cpu:.1f} | {cpu / cpu0:.2f} | {wall:.1f} | {wall / wall0:.2f} "
            f"| {min(row['wall']):.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
