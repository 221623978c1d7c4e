"""Benchmark of `gpu-cdi generate`: the whole process and in-process regeneration, each figure
printed as a ratio beside its anchor measured in the same run, interleaved (the machine is
shared and noisy): the import floor `python -c "import pynvml, attrs"` always, and NVIDIA's
nvidia-ctk 1.20 when ../shared/anchors holds it. Prints a table.

gpu-cdi runs from a regular install of this tree (`pip install --no-deps .` into a temporary
venv whose dependencies are the dev venv's), so its start-up is what an operator gets, not the
editable install's. nvidia-ctk reads /sys and /proc at fixed paths, so it runs under the
anchors' `nsrun.sh` (a mount namespace with the fake host's), and gpu-cdi runs there too for
the rows that compare the two; nvidia-ctk needs the anchors' LD_PRELOAD shim for the MIG calls
the fake NVML may lack (tried without it first).

Needs root (the fake hosts' device nodes are made with mknod; nsrun.sh mounts) and the fake
NVML (`python -m gpu_cdi_fakehost build-lib`). Peak RSS needs /usr/bin/time (GNU time); the
instruction counts (callgrind's, which the machine's load does not move) need valgrind.

Run: .venv/bin/python bench/generate.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TIME = "/usr/bin/time"
Argv = list[str]


def find_anchors() -> Path | None:
    """The shared anchors directory (nvidia-ctk), if this checkout can see one."""
    given = os.environ.get("GPU_CDI_ANCHORS")
    for candidate in ([Path(given)] if given else []) + [
        ROOT.parent / "shared" / "anchors",
        ROOT.parent.parent / "shared" / "anchors",
    ]:
        if (candidate / "nvidia-ctk").is_file() and (candidate / "nsrun.sh").is_file():
            return candidate
    return None


def regular_install(work: Path) -> Path:
    """A venv with this tree installed as `pip install .` installs it; returns its bin dir."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = next(Path(sys.prefix, "lib").glob("python3*/site-packages"))
    (site / "gpu_cdi_bench_deps.pth").write_text(f"{deps}\n")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install"),
            *("-q", "--no-deps", "--no-build-isolation", str(ROOT)),
        ],
        check=True,
        cwd=work,
    )
    return venv / "bin"


class Timed:
    """Wall and CPU (user + system) milliseconds of each run of one command."""

    def __init__(self, argv: Argv, env: dict[str, str]) -> None:
        self.argv = argv
        self.env = env
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self) -> None:
        start = time.perf_counter()
        pid = os.posix_spawn(
            self.argv[0],
            self.argv,
            self.env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
            ],
        )
        _, status, usage = os.wait4(pid, 0)
        self.wall.append((time.perf_counter() - start) * 1000)
        self.cpu.append((usage.ru_utime + usage.ru_stime) * 1000)
        if status != 0:
            code = os.waitstatus_to_exitcode(status)
            raise SystemExit(f"failed (exit status {code}): {' '.join(self.argv)}")

    def median(self) -> float:
        return statistics.median(self.wall)

    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def interleaved(commands: Sequence[Timed], runs: int) -> None:
    """One warm-up each (bytecode written, caches filled), then `runs` rounds in turn."""
    for command in commands:
        command.run()
    for _ in range(runs):
        for command in commands:
            command.run()


def peak_rss(argv: Argv, env: dict[str, str]) -> float | None:
    """Peak RSS (MiB) over 3 runs, through GNU time: a child this (large) process spawns would
    report our own RSS as its high-water mark."""
    if not os.access(TIME, os.X_OK):
        return None
    peaks = []
    for _ in range(3):
        proc = subprocess.run(
            [TIME, "-f", "%M", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        peaks.append(int(proc.stderr.decode().strip().splitlines()[-1]))
    return max(peaks) / 1024


def instructions(argv: Argv, env: dict[str, str]) -> int | None:
    """Instructions one run of `argv` executes, counted by callgrind (None without valgrind)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    with tempfile.TemporaryDirectory() as work:
        proc = subprocess.run(
            [valgrind, "--tool=callgrind", f"--callgrind-out-file={work}/out", *argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", proc.stderr.decode())
    return int(found.group(1)) if found else None


def ctk_env(anchors: Path, host: Any, env: dict[str, str]) -> dict[str, str] | None:
    """The environment nvidia-ctk runs with on `host`: without the MIG shim if the fake NVML
    has every call it needs, else with it; None when it does not run at all."""
    argv = ctk_argv(anchors, host)
    for extra in ({}, {"LD_PRELOAD": str(anchors / "libnvml-mig-shim.so")}):
        trial = {**env, **extra}
        proc = subprocess.run(argv, env=trial, capture_output=True)
        if proc.returncode == 0:
            return trial
    return None


def ctk_argv(anchors: Path, host: Any) -> Argv:
    return [
        *nsrun(anchors, host),
        str(anchors / "nvidia-ctk"),
        "cdi",
        "generate",
        "--driver-root",
        str(host.driver_root),
        "--dev-root",
        str(host.dev_root),
        "--output",
        f"{host.root}/.ctk.yaml",
    ]


def nsrun(anchors: Path, host: Any) -> Argv:
    """Run in a mount namespace with the fake host's /sys and /proc (nvidia-ctk reads them at
    fixed paths)."""
    return [str(anchors / "nsrun.sh"), str(host.proc_sys_root)]


def regenerate_in_process(bin_dir: Path, host: Any, runs: int) -> tuple[float, float, float, float]:
    """Median wall, minimum wall and median CPU ms of `cdi.nvidia.generate.regenerate` on
    `host` in the regular install, and the median wall ms of its discovery part alone, after
    one warm-up (imports and first-time caches are the whole-process rows' business)."""
    code = (
        "import statistics, sys, time\n"
        "from cdi.nvidia.build import Options\n"
        "from cdi.nvidia.discover import discover\n"
        "from cdi.nvidia.generate import regenerate\n"
        "from cdi.nvidia.roots import Roots\n"
        "r = Roots(*sys.argv[1:3], proc_sys_root=sys.argv[3])\n"
        "for call in (lambda: regenerate(r, Options()), lambda: discover(r)):\n"
        "    call()\n"
        "    times, cpu = [], []\n"
        "    for _ in range(int(sys.argv[4])):\n"
        "        start, start_cpu = time.perf_counter(), time.process_time()\n"
        "        call()\n"
        "        times.append((time.perf_counter() - start) * 1000)\n"
        "        cpu.append((time.process_time() - start_cpu) * 1000)\n"
        "    print(statistics.median(times), min(times), statistics.median(cpu))\n"
    )
    roots = [str(host.driver_root), str(host.dev_root), str(host.proc_sys_root)]
    proc = subprocess.run(
        [str(bin_dir / "python"), "-c", code, *roots, str(runs)],
        env={**os.environ, **host.env},
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    whole, best, cpu, discovery, _, _ = map(float, proc.stdout.split())
    return whole, best, cpu, discovery


def row(what: str, ours: str, anchor: str, ratio: str, target: str, ok: bool | None) -> str:
    verdict = "-" if ok is None else ("OK" if ok else "MISSED")
    return f"| {what} | {ours} | {anchor} | {ratio} | {target} | {verdict} |"


def main() -> int:
    """Build the fake hosts and the regular install, time everything, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="rounds of the process rows")
    args = parser.parse_args()
    from gpu_cdi_fakehost.builder import build_host

    anchors = find_anchors()
    rows = [
        "| what | gpu-cdi | anchor | ratio | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as base:
        work = Path(base)
        bin_dir = regular_install(work)
        hosts = {t: build_host(t, work / t) for t in ("dgx-a100-mig", "scale-64")}
        mig = hosts["dgx-a100-mig"]
        env = {**os.environ, **mig.env}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # cached bytecode, as an install has it
        python = str(bin_dir / "python")
        generate = [str(bin_dir / "gpu-cdi"), *mig.generate_argv[1:]]
        floor = Timed([python, "-c", "import pynvml, attrs"], env)
        model = Timed([python, "-c", "import pynvml, attrs, cdi.spec"], env)
        ours = Timed(generate, env)
        interleaved([floor, model, ours], args.runs)
        ratio = ours.median() / floor.median()
        rows.append(
            row(
                "`generate` whole process, dgx-a100-mig (wall, median)",
                f"{ours.median():.1f} ms",
                f"import floor {floor.median():.1f} ms",
                f"{ratio:.2f}x",
                "≤ 1.15x",
                ratio <= 1.15,
            )
        )
        rows.append(
            row(
                "same, CPU time (user + system)",
                f"{ours.cpu_median():.1f} ms",
                f"import floor {floor.cpu_median():.1f} ms",
                f"{ours.cpu_median() / floor.cpu_median():.2f}x",
                "-",
                None,
            )
        )
        rows.append(
            row(
                "importing the spec model (`import pynvml, attrs, cdi.spec`)",
                f"{model.median():.1f} ms",
                f"import floor {floor.median():.1f} ms",
                f"{model.median() / floor.median():.2f}x (CPU "
                f"{model.cpu_median() / floor.cpu_median():.2f}x)",
                "-",
                None,
            )
        )
        ours_ir, floor_ir = instructions(generate, env), instructions(floor.argv, env)
        rows.append(
            row(
                "same, instructions (callgrind)",
                f"{ours_ir / 1e6:.1f} M" if ours_ir else "- (no valgrind)",
                f"import floor {floor_ir / 1e6:.1f} M" if floor_ir else "-",
                f"{ours_ir / floor_ir:.2f}x" if ours_ir and floor_ir else "-",
                "-",
                None,
            )
        )
        rss = peak_rss(generate, env)
        floor_rss = peak_rss(floor.argv, env)
        rows.append(
            row(
                "peak RSS, `generate` dgx-a100-mig",
                f"{rss:.1f} MiB" if rss else "- (no /usr/bin/time)",
                f"import floor {floor_rss:.1f} MiB" if floor_rss else "-",
                f"{rss / floor_rss:.2f}x" if rss and floor_rss else "-",
                "≤ 22 MiB",
                None if rss is None else rss <= 22,
            )
        )

        regen = {
            name: regenerate_in_process(bin_dir, host, args.runs if name == "dgx-a100-mig" else 5)
            for name, host in hosts.items()
        }
        ctk_ms: dict[str, float] = {}
        if anchors is None:
            rows.append(row("nvidia-ctk", "-", "not found (../shared/anchors)", "-", "-", None))
        for name, host in hosts.items():
            if anchors is None:
                break
            host_env = {**env, **host.env}
            ctk = ctk_env(anchors, host, host_env)
            if ctk is None:
                rows.append(row(f"nvidia-ctk on {name}", "-", "does not run", "-", "-", None))
                continue
            runs = args.runs if name == "dgx-a100-mig" else 2  # nvidia-ctk takes seconds there
            argv = [*nsrun(anchors, host), str(bin_dir / "gpu-cdi"), *host.generate_argv[1:]]
            ours_ns = Timed(argv, host_env)
            theirs = Timed(ctk_argv(anchors, host), ctk)
            interleaved([ours_ns, theirs], runs)
            ctk_ms[name] = theirs.median()
            speedup = theirs.median() / ours_ns.median()
            shim = " (with the MIG shim)" if "LD_PRELOAD" in ctk else ""
            rows.append(
                row(
                    f"`generate` whole process, {name}, both in nsrun.sh",
                    f"{ours_ns.median():.1f} ms",
                    f"nvidia-ctk {theirs.median():.1f} ms{shim}",
                    f"{ours_ns.median() / theirs.median():.2f}x"
                    + (f" ({speedup:.1f}x faster)" if speedup > 1 else ""),
                    "≥ 20x faster" if name == "scale-64" else "-",
                    speedup >= 20 if name == "scale-64" else None,
                )
            )
            if name == "dgx-a100-mig":
                ctk_rss = peak_rss(theirs.argv, ctk)
                rows.append(
                    row(
                        "peak RSS, dgx-a100-mig, both in nsrun.sh",
                        f"{peak_rss(ours_ns.argv, host_env) or 0:.1f} MiB",
                        f"nvidia-ctk {ctk_rss or 0:.1f} MiB",
                        "-",
                        "-",
                        None,
                    )
                )
        for name, (ms, best, cpu, discovery) in regen.items():
            limit = 8.0 if name == "dgx-a100-mig" else 80.0
            if name in ctk_ms:
                anchor = f"nvidia-ctk process {ctk_ms[name]:.1f} ms"
            else:
                anchor = f"import floor {floor.median():.1f} ms"
            against = ctk_ms.get(name, floor.median())
            rows.append(
                row(
                    f"in-process `regenerate`, {name} (wall median; min; CPU median)",
                    f"{ms:.1f}; {best:.1f}; {cpu:.1f} ms (discovery {discovery:.1f} ms)",
                    anchor,
                    f"{ms / against:.3f}x",
                    f"≤ {limit:.0f} ms",
                    ms <= limit,
                )
            )
    print("\n".join(rows))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.runs} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
