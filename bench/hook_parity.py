"""Do our hooks leave a container's filesystem as NVIDIA's nvidia-cdi-hook leaves it?

    sudo .venv/bin/python bench/hook_parity.py [--topology T] [--image I] [--device D]
                                               [--enable-hook chmod] [-v]

For each fake host, device selection and container image: one container rootfs (image + the
mounts and device nodes of our spec for those devices) is copied twice; the hooks of our spec
(`gpu-cdi-hook`) run on one copy, the hooks of nvidia-ctk's spec for the same host and devices
(`nvidia-cdi-hook`, from $GPU_CDI_ANCHORS) on the other, each as runc runs them; then both
trees are compared entry by entry: type, mode, owner, device numbers, link targets, file
contents (ld.so.cache included). Not compared: nvidia-cdi-hook's scratch dirs
(/run/nvidia-ctk-hook*) and the random part of drop-in names (00-nvcr-*.conf, zz-nvcr-*.conf,
00-compat-*.conf). Exit 1 on any difference. A documented check (docs/hook.md), never part of
`make test`: NVIDIA's binaries are not shipped or required by the test suite.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hookbed

# topology -> device selections (CDI device names) tried on it
CASES = {
    "dgx-a100": [["0"], ["all"], ["3", "5"]],
    "dgx-a100-mig": [["0:1"], ["1:1", "2"]],
    "workstation": [["0"]],
}


def compare(
    bed: hookbed.Bed, ours: hookbed.Injected, theirs: hookbed.Injected, verbose: bool
) -> list[str]:
    """Differences between the trees our and nvidia's hooks leave (empty: equal)."""
    trees = []
    for label, injected in (("ours", ours), ("nvidia", theirs)):
        rootfs = bed.fresh()
        _, _, errors = bed.run_hooks(injected)
        if errors:
            return [f"{label} hooks failed: {e}" for e in errors]
        trees.append(hookbed.snapshot(rootfs))
        if verbose:
            conf = rootfs / "etc/ld.so.conf.d"
            for name in sorted(os.listdir(conf)) if conf.is_dir() else []:
                print(f"    {label} {name}: {(conf / name).read_text().split()}")
        bed.discard()
    return hookbed.diff(trees[0], trees[1])


def run_case(
    host: object,
    our_spec: dict[str, object],
    their_spec: dict[str, object],
    names: list[str],
    args: argparse.Namespace,
    tmp: Path,
) -> int:
    """Compare both hook sets for devices `names` on every image; the number that differ."""
    ours, theirs = hookbed.inject(our_spec, names), hookbed.inject(their_spec, names)
    failed = 0
    for image in args.image or list(hookbed.IMAGES):
        bed = hookbed.Bed(Path(tempfile.mkdtemp(dir=tmp)), image, host, ours)
        lines = compare(bed, ours, theirs, args.verbose)
        label = f"{host.topology.name} {','.join(names)} on {image}"  # type: ignore[attr-defined]
        procs = f"{len(ours.argvs)} vs {len(theirs.argvs)} hook processes"
        print(f"{'DIFFERS' if lines else 'same   '} {label:<38} ({procs})")
        for line in lines:
            print(f"    {line}")
        failed += bool(lines)
    return failed


def main() -> int:
    """Run every case, print one line per case and the differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", action="append", choices=sorted(CASES))
    parser.add_argument("--image", action="append", choices=sorted(hookbed.IMAGES))
    parser.add_argument("--device", action="append", help="CDI device name (repeatable)")
    parser.add_argument(
        "--enable-hook", action="append", default=[], help="passed to both generators, e.g. chmod"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: device nodes, mounts, chroot")
    for tool in ("nvidia-ctk", "nvidia-cdi-hook", "nsrun.sh"):
        if not (hookbed.ANCHORS / tool).exists():
            sys.exit(f"{hookbed.ANCHORS / tool} missing: set GPU_CDI_ANCHORS to NVIDIA's binaries")
    hookbed.private_mount_namespace()
    failed = 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for topology in args.topology or list(CASES):
            host = hookbed.build_host(topology, Path(tmp))
            flags = [f"--enable-hook={name}" for name in args.enable_hook]
            our_spec = hookbed.our_spec(host, flags=flags)
            their_spec = hookbed.nvidia_spec(host, flags=flags)
            selections = [args.device] if args.device else CASES[topology]
            with hookbed.driver_of(host):
                for names in selections:
                    failed += run_case(host, our_spec, their_spec, names, args, Path(tmp))
    print(f"{failed} case(s) differ" if failed else "all cases: same container filesystem")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
