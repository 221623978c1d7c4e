"""Cost of a GPU container's hooks: gpu-cdi-hook beside NVIDIA's nvidia-cdi-hook, same container.

    sudo .venv/bin/python bench/hook.py [--runs N] [--image debian] [--dir DIR]

A fake dgx-a100 host (8 GPUs, driver 550.163.01) gives two specs: ours (`gpu-cdi generate`,
hooks in the fast form `python -I -S .../cdi/hook/__main__.py`) and nvidia-ctk's (hooks run by
nvidia-cdi-hook from $GPU_CDI_ANCHORS, else beside $NVIDIA_CTK, else /work/shared/anchors;
without them it says so and exits 0). For a one-GPU and an 8-GPU
container, one container rootfs (bench/hookbed.py: image, the spec's mounts and device nodes, a
mount point as runc makes it) is copied fresh before every run, and each side runs all the
createContainer hooks its spec gives that container, one after the other as runc does, timed
from the first spawn to the last exit. The sides take turns run by run, so load from other
processes hits both alike. Before timing, both trees are checked equal (bench/hook_parity.py
does that for more images and hosts): the two sides do the same work.

Peak RSS is each hook process's high-water mark (ldconfig child included), measured through a
tiny launcher built with gcc: a child of this large Python process would inherit its RSS mark.

Targets (issue 13): all hooks of a one-GPU container <= 0.5x nvidia-cdi-hook's, of an 8-GPU
container <= 0.3x; one hook process per container; peak RSS <= 12 MiB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hookbed

TARGETS = {"one GPU": 0.5, "8 GPUs": 0.3}
RSS_TARGET_KIB = 12 * 1024
CASES = {"one GPU": ["0"], "8 GPUs": ["all"]}

RSS_LAUNCHER = r"""
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
/* rss OUTFILE PROG ARGS...: run PROG (stdin inherited), write its peak RSS in KiB to OUTFILE. */
int main(int argc, char **argv) {
    pid_t pid = fork();
    if (pid == 0) { execv(argv[2], argv + 2); _exit(127); }
    int status; struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) return 1;
    FILE *out = fopen(argv[1], "w");
    fprintf(out, "%ld\n", ru.ru_maxrss);
    fclose(out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
"""


def rss_launcher(work: Path) -> Path:
    """Build the peak-RSS launcher."""
    src, exe = work / "rss.c", work / "rss"
    src.write_text(RSS_LAUNCHER)
    hookbed.run(["gcc", "-O2", "-o", str(exe), str(src)])
    return exe


def peak_rss(bed: hookbed.Bed, injected: hookbed.Injected, launcher: Path) -> int:
    """Largest peak RSS (KiB) among the container's hook processes, on a fresh rootfs."""
    bed.fresh()
    peaks = []
    out = bed.work / "rss.out"
    for path, args, env in injected.argvs:
        with open(bed.state_file, "rb") as stdin:
            proc = subprocess.run(
                [str(launcher), str(out), path, *args[1:]],
                stdin=stdin,
                env=dict(e.split("=", 1) for e in env),
                capture_output=True,
                check=False,
            )
        if proc.returncode != 0:
            sys.exit(f"{path} failed under the RSS launcher: {proc.stderr.decode()}")
        peaks.append(int(out.read_text()))
    bed.discard()
    return max(peaks)


def check_same(bed: hookbed.Bed, ours: hookbed.Injected, theirs: hookbed.Injected) -> None:
    """Exit unless both hook sets leave the same tree (else the timing compares apples/pears)."""
    trees = []
    for injected in (ours, theirs):
        rootfs = bed.fresh()
        _, _, errors = bed.run_hooks(injected)
        if errors:
            sys.exit(f"hooks failed: {errors}")
        trees.append(hookbed.snapshot(rootfs))
        bed.discard()
    lines = hookbed.diff(*trees)
    if lines:
        sys.exit("the two hook sets leave different trees:\n  " + "\n  ".join(lines))


def main() -> int:
    """Build the host and containers, time both sides, print the table and the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--image", default="debian", choices=sorted(hookbed.IMAGES))
    parser.add_argument(
        "--python",
        default="/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable,
        help="interpreter our hook runs with (default: the system's, as on a node)",
    )
    parser.add_argument(
        "--dir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="where to build (default /dev/shm: tmpfs, like the e2e containerd root)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: device nodes, mounts, chroot")
    if not (hookbed.ANCHORS / "nvidia-cdi-hook").exists():
        # As bench/nvidia_ctk_parity.py: the anchor is never part of `make test`.
        print(f"bench/hook.py: skipped: no {hookbed.ANCHORS}/nvidia-cdi-hook (set GPU_CDI_ANCHORS)")
        return 0
    hookbed.private_mount_namespace()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        host = hookbed.build_host("dgx-a100", work)
        our_spec, their_spec = hookbed.our_spec(host, args.python), hookbed.nvidia_spec(host)
        launcher = rss_launcher(work)
        with hookbed.driver_of(host):
            beds = {}
            for label, names in CASES.items():
                ours, theirs = hookbed.inject(our_spec, names), hookbed.inject(their_spec, names)
                bed = hookbed.Bed(work / label.replace(" ", "-"), args.image, host, ours)
                check_same(bed, ours, theirs)
                beds[label] = (bed, ours, theirs)
            times: dict[tuple[str, str], list[float]] = {}
            cpu: dict[tuple[str, str], list[float]] = {}
            for rnd in range(args.runs + 3):
                for label, (bed, ours, theirs) in beds.items():
                    for side, injected in (("ours", ours), ("nvidia", theirs)):
                        bed.fresh()
                        took, cpus, errors = bed.run_hooks(injected)
                        bed.discard()
                        if errors:
                            sys.exit(f"{side} hooks failed: {errors}")
                        if rnd >= 3:  # warm-up rounds
                            times.setdefault((label, side), []).append(took * 1000)
                            cpu.setdefault((label, side), []).append(sum(cpus) * 1000)
            rss = {
                (label, side): peak_rss(bed, injected, launcher)
                for label, (bed, ours, theirs) in beds.items()
                for side, injected in (("ours", ours), ("nvidia", theirs))
            }
    print(
        f"{args.runs} interleaved runs per case, image {args.image}, rootfs on {args.dir},"
        f" our hook run by {args.python}"
    )
    head = f"{'container':<10} {'side':<8} {'processes':>9} {'median':>8} {'p90':>8} {'min':>8}"
    print(f"{head} {'CPU':>8} {'peak RSS':>9}   (wall time of all hooks; CPU: median)")
    for label, (_, ours, theirs) in beds.items():
        medians, mins, cpus = {}, {}, {}
        for side, injected in (("ours", ours), ("nvidia", theirs)):
            ms = sorted(times[(label, side)])
            medians[side], mins[side] = statistics.median(ms), ms[0]
            cpus[side] = statistics.median(cpu[(label, side)])
            p90 = ms[int(0.9 * (len(ms) - 1))]
            print(
                f"{label:<10} {side:<8} {len(injected.argvs):>9} {medians[side]:>6.1f}ms"
                f" {p90:>6.1f}ms {ms[0]:>6.1f}ms {cpus[side]:>6.1f}ms"
                f" {rss[(label, side)] / 1024:>6.1f}MiB"
            )
        ratio = medians["ours"] / medians["nvidia"]
        # Paired: both sides ran back to back in each round, under the same load.
        pairs = zip(times[(label, "ours")], times[(label, "nvidia")], strict=True)
        paired = statistics.median(a / b for a, b in pairs)
        target = TARGETS[label]
        print(
            f"  {label}: ours/nvidia = {ratio:.2f}x median (target <= {target}x)"
            f" {'OK' if ratio <= target else 'MISSED'}; {paired:.2f}x median of per-round"
            f" ratios; {mins['ours'] / mins['nvidia']:.2f}x min;"
            f" {cpus['ours'] / cpus['nvidia']:.2f}x CPU; hook processes {len(ours.argvs)}"
            f" vs {len(theirs.argvs)}"
        )
    peak = max(v for (_, side), v in rss.items() if side == "ours")
    print(
        f"  peak RSS of gpu-cdi-hook: {peak / 1024:.1f} MiB (target <= {RSS_TARGET_KIB // 1024}"
        f" MiB) {'OK' if peak <= RSS_TARGET_KIB else 'MISSED'}"
    )
    return 0  # targets are reported, not enforced: the machine is shared and noisy


if __name__ == "__main__":
    sys.exit(main())
