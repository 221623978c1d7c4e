"""Benchmark of `gpu-cdi generate`: the whole process on a fake host, and in-process generation.
Prints a table. Needs root (the fake hosts' device nodes are made with mknod) and the fake NVML
(`python -m gpu_cdi_fakehost build-lib`).

Run: .venv/bin/python bench/generate.py [--runs N]

Targets (issue 4, CI machine): whole process <= 40 ms on dgx-a100-mig (nvidia-ctk: 34-45 ms;
`python -c pass`: ~10 ms); in-process <= 10 ms for dgx-a100-mig and <= 100 ms for scale-64;
peak RSS <= 40 MB.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdi.nvidia import generate as gen  # noqa: E402
from cdi.nvidia.build import Options  # noqa: E402
from cdi.nvidia.discover import discover  # noqa: E402
from cdi.nvidia.inventory import load  # noqa: E402
from cdi.nvidia.roots import Roots  # noqa: E402


def _peak_rss(argv: list[str], env: dict[str, str]) -> int | None:
    """Peak RSS (KiB) of `argv`, through /usr/bin/time: a child forked from this (large)
    process would report our RSS as its own high-water mark."""
    if not os.access("/usr/bin/time", os.X_OK):
        return None
    peaks = []
    for _ in range(5):
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", *argv], env=env, capture_output=True, text=True
        )
        peaks.append(int(proc.stderr.strip().splitlines()[-1]))
    return max(peaks)


def _process(argv: list[str], env: dict[str, str], runs: int) -> tuple[list[float], int | None]:
    """Wall times (ms) of `argv` run `runs` times (after one warm-up), and its peak RSS (KiB)."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if i:
            times.append((time.perf_counter() - start) * 1000)
        if proc.returncode != 0:
            raise SystemExit(f"{argv} failed: {proc.stderr.decode()}")
    return times, _peak_rss(argv, env)


def _in_process(call: Callable[[], object], runs: int) -> list[float]:
    call()  # warm-up: imports and first-time caches are the whole-process row's business
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def _generate(host: object, inventory_path: str | None) -> Callable[[], object]:
    def run() -> object:
        if inventory_path is None:
            inv = discover(
                Roots(
                    str(host.driver_root),  # type: ignore[attr-defined]
                    str(host.dev_root),  # type: ignore[attr-defined]
                    proc_sys_root=str(host.proc_sys_root),  # type: ignore[attr-defined]
                )
            )
        else:
            inv = load(inventory_path)
        target = gen.Target("", "yaml")
        return gen.run(inv, Options(), target, None, out=io.StringIO(), err=io.StringIO())

    return run


def _row(name: str, times: list[float], target: str, rss: int | None = None) -> str:
    # Medians resist the noise of a shared 2-core machine better than means.
    mem = f"{rss / 1024:6.1f} MiB" if rss else "         -"
    return (
        f"| {name:<46} | {statistics.mean(times):7.1f} | {statistics.median(times):7.1f} "
        f"| {min(times):7.1f} | {mem} | {target:>9} |"
    )


def main() -> int:
    """Build the fake hosts, time everything, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    from gpu_cdi_fakehost.builder import build_host

    rows = [
        "| what | mean ms | median ms | min ms | peak RSS | target |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as base:
        hosts = {t: build_host(t, Path(base) / t) for t in ("dgx-a100-mig", "scale-64")}
        mig = hosts["dgx-a100-mig"]
        env = {**os.environ, **mig.env}
        # Cached bytecode, as an installed gpu-cdi runs; the warm-up run writes it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        exe = str(Path(sys.executable).parent / "gpu-cdi")
        argv = [exe, *mig.generate_argv[1:]]
        times, rss = _process([sys.executable, "-c", "pass"], env, args.runs)
        rows.append(_row("python -c pass (process start)", times, "-", rss))
        times, rss = _process(argv, env, args.runs)
        rows.append(_row("gpu-cdi generate, dgx-a100-mig (process)", times, "40 ms", rss))
        inv_mig = str(ROOT / "specs/inventories/dgx-a100-mig.yaml")
        times, rss = _process([exe, "generate", "--inventory", inv_mig], env, args.runs)
        rows.append(_row("gpu-cdi generate --inventory dgx-a100-mig", times, "-", rss))
        for name, host in hosts.items():
            os.environ.update(host.env)
            target = "10 ms" if name == "dgx-a100-mig" else "100 ms"
            times = _in_process(_generate(host, None), args.runs)
            rows.append(_row(f"in-process discover+build+render, {name}", times, target))
            inv = str(ROOT / f"specs/inventories/{name}.yaml")
            times = _in_process(_generate(host, inv), args.runs)
            rows.append(_row(f"in-process load+build+render, {name}", times, "-"))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
