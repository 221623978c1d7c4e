"""Benchmark: `gpu-cdi generate` inside the DaemonSet's container (the node's / at /host,
`--host-root=/host`) against the same generation on the node (issue 17: "costs the same").

One fake dgx-a100-mig node. Each row is the median wall time of the `gpu-cdi generate` process,
timed by the same loop run where the process runs (inside the container for the container
row), so podman's own start-up is not counted. Blocks alternate, and the ratio is against the
node row of the same run. Needs root, podman, busybox and the fake NVML (as `make test`).

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.deploy.test_in_container import IMAGE, _container, podman_run_args  # noqa: E402
from tests.e2e import interpreter  # noqa: E402
from tests.e2e.podman import Podman  # noqa: E402

# Runs `python -m cdi generate ARGS` N times (one warm-up) and prints the wall times in ms as JSON.
LOOP = """
import json, subprocess, sys, time
runs, args = int(sys.argv[1]), sys.argv[2:]
times = []
for i in range(runs + 1):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cdi", "generate", *args], check=True)
    if i:
        times.append((time.perf_counter() - start) * 1000)
print(json.dumps(times))
"""


def main() -> int:
    """Build the node and the image, time the three ways alternately, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
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

        def here(argv: list[str]) -> list[float]:
            proc = subprocess.run(
                [sys.executable, "-c", LOOP, str(args.runs), *argv],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            times: list[float] = json.loads(proc.stdout)
            return times

        rows: dict[str, list[float]] = {"node": [], "mounted": [], "container": []}
        for _ in range(args.rounds):
            rows["node"] += here(on_node)
            rows["mounted"] += here(mounted)
            rows["container"] += json.loads(podman("run", *in_container, timeout=600).stdout)

    anchor = statistics.median(rows["node"])
    names = {
        "node": "on the node (--driver-root/--dev-root/--proc-sys-root DIR)",
        "mounted": "the node read through --host-root DIR, here",
        "container": "DaemonSet's command in podman, node at /host",
    }
    print(f"gpu-cdi generate, dgx-a100-mig, {args.rounds} x {args.runs} runs each")
    print("| where | median ms | min ms | ratio to node |")
    print("|---|---|---|---|")
    for key, times in rows.items():
        median = statistics.median(times)
        print(f"| {names[key]} | {median:.1f} | {min(times):.1f} | {median / anchor:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
