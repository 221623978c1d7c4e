"""`gpu-cdi generate` beside NVIDIA's nvidia-ctk 1.20 on the same fake hosts: do the specs have the
same effect, and how long does each take. Prints a table; exits 1 when a spec differs.

nvidia-ctk runs unmodified against the fake libnvidia-ml.so.1 (no LD_PRELOAD shim). It reads
/sys, /proc/driver and /proc/devices at fixed paths, so both programs run in a private mount
namespace where the fake host's are bound over them (root needed, as for the fake hosts' device
nodes). Specs are compared as tests/generator/parity.py does against the stored nvidia-ctk
specs: lists sorted, hooks reduced to their effect, host paths relative to the fake root.

Run: NVIDIA_CTK=../shared/anchors/nvidia-ctk .venv/bin/python bench/nvidia_ctk_parity.py
     [--runs N] [--topology NAME ...]
Without NVIDIA_CTK it says so and exits 0 (the anchor is never part of `make test`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.generator import parity  # noqa: E402
from tests.generator.hosts import unroot  # noqa: E402

# Bind the fake host's kernel views over the real ones, then run the command ($1 = host root).
_NAMESPACE = (
    'h=$1; shift; mount --bind "$h/sys" /sys && mount --bind "$h/proc/driver" /proc/driver '
    '&& mount --bind "$h/proc/devices" /proc/devices && exec "$@"'
)


def in_host(host: Any, argv: list[str]) -> list[str]:
    """`argv` run in a private mount namespace that shows `host`'s /sys and /proc views."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", _NAMESPACE, "sh",
            str(host.root), *argv]  # fmt: skip


def commands(host: Any, ctk: str, out: Path) -> tuple[list[str], list[str]]:
    """(ours, theirs): each writes its spec for `host` (ours to stdout, theirs to `out`)."""
    ours = [str(Path(sys.executable).parent / "gpu-cdi"), *host.generate_argv[1:]]
    theirs = [ctk, "cdi", "generate", "--driver-root", str(host.driver_root),
              "--dev-root", str(host.dev_root), "--output", str(out)]  # fmt: skip
    return in_host(host, ours), in_host(host, theirs)


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `argv`; its failure ends the benchmark with the program's own words."""
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
        program, host_root = Path(argv[9]).name, argv[8]  # see in_host()
        raise SystemExit(f"nvidia_ctk_parity: {program} failed on {host_root}:\n{tail}")
    return proc


def at_root(spec: Any, root: str) -> Any:
    """The spec as if the fake host's root were `/`.

    Besides host paths, nvidia-ctk keeps --dev-root in the container side of the DRM by-path
    links it asks for (`../card1::<dev-root>/dev/dri/by-path/...`); on a real host, where the
    root is `/`, both spellings are the same link.
    """
    if isinstance(spec, str) and "::" in spec:
        target, _, link = spec.partition("::")
        return f"{target}::{unroot(link, root)}"
    if isinstance(spec, dict):
        return unroot({k: at_root(v, root) for k, v in spec.items()}, root)
    if isinstance(spec, list):
        return [at_root(v, root) for v in spec]
    return unroot(spec, root)


def compare(host: Any, ctk: str, env: dict[str, str], work: Path) -> list[str]:
    """What differs, by effect, between our spec and nvidia-ctk's for `host`."""
    out = work / f"{host.topology.name}.nvidia-ctk.yaml"
    ours_argv, theirs_argv = commands(host, ctk, out)
    ours = yaml.safe_load(run(ours_argv, env).stdout)
    run(theirs_argv, env)
    theirs = yaml.safe_load(out.read_text())
    root = str(host.root)
    return parity.differences(
        parity.normalize(at_root(ours, root)), parity.normalize(at_root(theirs, root))
    )


def timings(argvs: list[list[str]], env: dict[str, str], runs: int) -> list[list[float]]:
    """Wall times (ms) of each command, interleaved run by run after one warm-up each."""
    times: list[list[float]] = [[] for _ in argvs]
    for i in range(runs + 1):
        for argv, into in zip(argvs, times, strict=True):
            start = time.perf_counter()
            run(argv, env)
            if i:
                into.append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    """Build each fake host, compare the two specs, time both, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per program and host")
    parser.add_argument("--topology", action="append", help="shipped topology (default: all)")
    args = parser.parse_args()
    ctk = os.environ.get("NVIDIA_CTK")
    if not ctk:
        print("nvidia_ctk_parity: NVIDIA_CTK is not set (the nvidia-ctk 1.20 binary to compare "
              "with, e.g. ../shared/anchors/nvidia-ctk): skipped")  # fmt: skip
        return 0
    if not os.access(ctk, os.X_OK):
        print(f"nvidia_ctk_parity: NVIDIA_CTK={ctk}: not an executable", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("nvidia_ctk_parity: needs root (mount namespace, device nodes)", file=sys.stderr)
        return 2
    from gpu_cdi_fakehost.builder import build_host
    from gpu_cdi_fakehost.topology import shipped_topologies

    rows = [
        "| topology | same effect | gpu-cdi median ms | nvidia-ctk median ms | ratio |",
        "|---|---|---|---|---|",
    ]
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as base:
        for name in args.topology or shipped_topologies():
            host = build_host(name, Path(base) / name)
            env = {**os.environ, **host.env}
            env.pop("LD_PRELOAD", None)  # the fake library is complete: no shim
            # cached bytecode, as an installed gpu-cdi runs; the warm-up run writes it
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            diffs = compare(host, ctk, env, Path(base))
            failures += [f"{name}: {d}" for d in diffs]
            # scale-64 takes nvidia-ctk seconds per run (it rereads the MIG minors per device)
            runs = args.runs if len(host.topology.mig_devices) < 100 else max(1, args.runs // 5)
            ours, theirs = timings(list(commands(host, ctk, Path(base) / "t.yaml")), env, runs)
            a, b = statistics.median(ours), statistics.median(theirs)
            same = "yes" if not diffs else f"no ({len(diffs)})"
            rows.append(f"| {name} | {same} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    print("\n".join(rows))
    print(f"(each in its own mount namespace; {args.runs} interleaved runs, scale-64 fewer)")
    for line in failures:
        print(f"differs: {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
