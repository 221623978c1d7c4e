"""Cost of gpu-cdi-hook per container start, next to a bare Python start and nvidia-cdi-hook.

    python bench/hook.py [--runs N] [--dir DIR] [--hyperfine]

Builds a one-GPU bundle like the reference measurement (a rootfs holding the 29 versioned
libraries of driver 550.163.01 as tiny real ELF files with their SONAMEs, built with gcc), then
times each hook action alone, the merged common hook, the per-device DRM link hook, a one-GPU
container's whole set (merged default, and one process per action), and the three ways to start
the program. Every run starts from the state a fresh container has (links, ld.so.cache and
ld.so.conf removed before each run, not timed). By default the cases take turns run by run
(posix_spawn to exit, nothing subtracted), which keeps load from other processes from skewing
one case; --hyperfine runs each case as a hyperfine block (shell start subtracted). Run as root:
update-ldcache chroots. Targets: the merged hook <= 2x `python -c pass`; all hooks of a one-GPU
container <= 15 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdi.hook.command import hook_command  # noqa: E402

V = "550.163.01"
LIBDIR = "/usr/lib/x86_64-linux-gnu"
# (library base name, SONAME suffix or None when the SONAME is the file name, extra .so link)
LIBS = [
    ("libEGL_nvidia", "0", False), ("libGLESv1_CM_nvidia", "1", False),
    ("libGLESv2_nvidia", "2", False), ("libGLX_nvidia", "0", False), ("libcuda", "1", True),
    ("libcudadebugger", "1", False), ("libnvcuvid", "1", True),
    ("libnvidia-allocator", "1", True), ("libnvidia-cfg", "1", True),
    ("libnvidia-eglcore", None, False), ("libnvidia-encode", "1", True),
    ("libnvidia-fbc", "1", True), ("libnvidia-glcore", None, False),
    ("libnvidia-glsi", None, False), ("libnvidia-glvkspirv", None, False),
    ("libnvidia-gpucomp", None, False), ("libnvidia-ml", "1", True),
    ("libnvidia-ngx", "1", False), ("libnvidia-nvvm", "4", True), ("libnvidia-opencl", "1", False),
    ("libnvidia-opticalflow", "1", True), ("libnvidia-pkcs11", None, False),
    ("libnvidia-pkcs11-openssl3", None, False), ("libnvidia-ptxjitcompiler", "1", True),
    ("libnvidia-rtcore", None, False), ("libnvidia-tls", None, False), ("libnvoptix", "1", False),
    ("vdpau/libvdpau_nvidia", "1", False),
]  # fmt: skip
DRI = ["../card1::/dev/dri/by-path/pci-0000:07:00.0-card",
       "../renderD128::/dev/dri/by-path/pci-0000:07:00.0-render"]  # fmt: skip
GRAPHICS = [f"../libnvidia-allocator.so.1::{LIBDIR}/gbm/nvidia-drm_gbm.so",
            f"libglxserver_nvidia.so.{V}::{LIBDIR}/nvidia/xorg/libglxserver_nvidia.so"]  # fmt: skip


def driver_links() -> list[str]:
    """The driver-library links of the reference one-GPU spec (SONAME and .so links)."""
    links = [f"libGLX_nvidia.so.{V}::{LIBDIR}/libGLX_indirect.so.0"]
    for name, so, dev in LIBS:
        if so is None:
            continue
        d, base = os.path.split(f"{LIBDIR}/{name}")
        links.append(f"{base}.so.{V}::{d}/{base}.so.{so}")
        if dev:
            links.append(f"{base}.so.{so}::{d}/{base}.so")
    return links


def build_bundle(top: Path) -> tuple[Path, Path]:
    """A bundle with config.json and a rootfs holding the driver libraries; returns paths."""
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("bench/hook.py needs gcc to build the fake driver libraries")
    bundle, rootfs = top / "bundle", top / "bundle" / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "dev/dri").mkdir(parents=True)
    for node in ("card1", "renderD128"):  # runc creates the nodes before hooks run
        (rootfs / "dev/dri" / node).write_text("")
    src = top / "empty.c"
    src.write_text("int gpu_cdi_bench;\n")
    for name, so, _ in LIBS:
        path = rootfs / f"{LIBDIR.lstrip('/')}/{name}.so.{V}"
        path.parent.mkdir(parents=True, exist_ok=True)
        soname = f"{os.path.basename(name)}.so.{so or V}"
        cmd = [gcc, "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(path), str(src)]
        subprocess.run(cmd, check=True)
    (bundle / "config.json").write_text(json.dumps({"root": {"path": "rootfs"}}))
    state = top / "state.json"
    state.write_text(json.dumps({"ociVersion": "1.0.2", "id": "bench", "status": "creating",
                                 "pid": os.getpid(), "bundle": str(bundle)}))  # fmt: skip
    return rootfs, state


def reset_script(rootfs: Path) -> str:
    """Shell command that returns the rootfs to a fresh container's state."""
    links = [x.split("::")[1] for x in driver_links() + GRAPHICS + DRI]
    paths = [f"{rootfs}{p}" for p in links]
    paths += [f"{rootfs}/etc/ld.so.cache", f"{rootfs}/etc/ld.so.conf"]
    return f"rm -rf {' '.join(map(shlex.quote, paths))} {shlex.quote(str(rootfs))}/etc/ld.so.conf.d"


def link_args(links: list[str]) -> list[str]:
    return [t for x in links for t in ("--link", x)]


def cases(python: str) -> list[tuple[str, list[list[str]]]]:
    """(label, list of argvs run one after another per measured run)."""
    _, fast = hook_command(python)
    script = str(Path(python).parent / "gpu-cdi-hook")
    symlinks = ["create-symlinks", *link_args(GRAPHICS + driver_links())]
    compat = ["enable-cuda-compat", f"--host-driver-version={V}"]
    ldcache = ["update-ldcache", "--folder", LIBDIR, "--folder", f"{LIBDIR}/vdpau"]
    nodemod = ["disable-device-node-modification"]
    dri = ["create-symlinks", *link_args(DRI)]
    common = [*symlinks, *compat, *ldcache, *nodemod]
    # What the generator writes by default: the DRM by-path links of every GPU ride in the
    # common hook as --link-if-target, so a container runs one hook process in total.
    merged = [
        *symlinks,
        *(t for x in DRI for t in ("--link-if-target", x)),
        *common[len(symlinks) :],
    ]
    out: list[tuple[str, list[list[str]]]] = [
        ("python -c pass (bare start, with site)", [[python, "-c", "pass"]]),
        ("python -I -S -c pass", [[python, "-I", "-S", "-c", "pass"]]),
        (f"create-symlinks ({len(GRAPHICS + driver_links())} links)", [[*fast, *symlinks]]),
        ("enable-cuda-compat (no compat dir)", [[*fast, *compat]]),
        ("update-ldcache (2 folders)", [[*fast, *ldcache]]),
        ("disable-device-node-modification (no driver)", [[*fast, *nodemod]]),
        ("create-symlinks (2 DRM by-path links, per device)", [[*fast, *dri]]),
        ("common hook: 4 actions merged, 1 process", [[*fast, *common]]),
        ("ONE-GPU CONTAINER, default: 1 process (DRM links in it)", [[*fast, *merged]]),
        ("one-GPU container, common + per-device process", [[*fast, *common], [*fast, *dri]]),
        (
            "one-GPU container, one process per action",
            [[*fast, *a] for a in (symlinks, compat, ldcache, nodemod, dri)],
        ),
        ("form: python -m cdi.hook create-symlinks", [[python, "-m", "cdi.hook", *symlinks]]),
        ("form: gpu-cdi-hook console script", [[script, *symlinks]]),
    ]
    nvidia = shutil.which("nvidia-cdi-hook")
    if nvidia:
        steps = [symlinks, compat, ldcache, nodemod, dri]
        out.append(("nvidia-cdi-hook, same actions", [[nvidia, *s] for s in steps]))
    return out


def shell(argvs: list[list[str]], state: Path) -> str:
    return "; ".join(f"{shlex.join(a)} < {shlex.quote(str(state))}" for a in argvs)


def hyperfine(cmd: str, prepare: str, runs: int, out: Path) -> list[float]:
    subprocess.run(
        ["hyperfine", "-w", "3", "-r", str(runs), "--prepare", prepare, "--export-json",
         str(out), "--style", "none", cmd],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    times: list[float] = json.loads(out.read_text())["results"][0]["times"]
    return [t * 1000 for t in times]


def reset(rootfs: Path) -> None:
    """Return the rootfs to a fresh container's state (what reset_script does, in-process)."""
    for link in driver_links() + GRAPHICS + DRI:
        path = rootfs / link.split("::")[1].lstrip("/")
        if path.is_symlink():
            path.unlink()
    for name in ("ld.so.cache", "ld.so.conf"):
        (rootfs / "etc" / name).unlink(missing_ok=True)
    shutil.rmtree(rootfs / "etc/ld.so.conf.d", ignore_errors=True)


def spawn(argv: list[str], state: Path) -> float:
    """Seconds from spawn to exit of `argv` with `state` on stdin."""
    fd = os.open(state, os.O_RDONLY)
    try:
        start = time.perf_counter()
        actions = [(os.POSIX_SPAWN_DUP2, fd, 0)]
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
        _, status = os.waitpid(pid, 0)
        took = time.perf_counter() - start
    finally:
        os.close(fd)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {shlex.join(argv)}")
    return took


def interleaved(
    all_cases: list[tuple[str, list[list[str]]]], state: Path, rootfs: Path, runs: int
) -> dict[str, list[float]]:
    """ms per run of every case; cases take turns within each round, so a burst of load from
    other processes on the machine hits all of them alike instead of one case's block."""
    times: dict[str, list[float]] = {label: [] for label, _ in all_cases}
    for rnd in range(runs + 3):
        for label, argvs in all_cases:
            reset(rootfs)
            took = sum(spawn(a, state) for a in argvs)
            if rnd >= 3:  # warm-up rounds
                times[label].append(took * 1000)
    return times


def main() -> int:
    """Build the bundle, time every case, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument(
        "--dir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="where to build the bundle (default /dev/shm: tmpfs like the e2e containerd root;"
        " on this CI machine's ext4 each inode creation alone costs ~0.3 ms)",
    )
    parser.add_argument("--hyperfine", action="store_true", help="time with hyperfine")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: update-ldcache chroots into the rootfs")
    python = sys.executable
    use_hf = args.hyperfine
    if use_hf and shutil.which("hyperfine") is None:
        sys.exit("--hyperfine: hyperfine is not installed (apt install hyperfine)")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rootfs, state = build_bundle(Path(tmp))
        fs = subprocess.run(["stat", "-f", "-c", "%T", tmp], capture_output=True, text=True)
        print(f"timing: {'hyperfine' if use_hf else 'interleaved spawn loop'}, {args.runs} runs, "
              f"rootfs on {tmp} ({fs.stdout.strip()}), python {python}")  # fmt: skip
        all_cases = cases(python)
        if use_hf:
            prepare = reset_script(rootfs)
            out = Path(tmp) / "hf.json"
            results = {
                label: hyperfine(shell(argvs, state), prepare, args.runs, out)
                for label, argvs in all_cases
            }
        else:
            results = interleaved(all_cases, state, rootfs, args.runs)
    print(f"{'case':<56} {'median':>7} {'mean':>7} {'p90':>7} {'min':>7}  ms")
    medians: dict[str, float] = {}
    for label, times in results.items():
        times.sort()
        medians[label] = med = statistics.median(times)
        p90 = times[int(0.9 * (len(times) - 1))]
        print(f"{label:<56} {med:7.1f} {statistics.mean(times):7.1f} {p90:7.1f} {times[0]:7.1f}")
    bare = medians["python -c pass (bare start, with site)"]
    merged = medians["common hook: 4 actions merged, 1 process"]
    total = medians["ONE-GPU CONTAINER, default: 1 process (DRM links in it)"]
    print(f"target: merged hook <= 2x bare python: {merged:.1f} / {bare:.1f} = "
          f"{merged / bare:.2f}x {'OK' if merged <= 2 * bare else 'MISSED'}")  # fmt: skip
    print(f"target: one-GPU container <= 15 ms: {total:.1f} ms "
          f"{'OK' if total <= 15 else 'MISSED'}")  # fmt: skip
    print("for comparison: nvidia-cdi-hook, the 7 hooks of a one-GPU spec: 36.4 ms mean (anchor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
