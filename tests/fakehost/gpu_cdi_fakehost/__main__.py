"""`gpu-cdi-fakehost` (and `python -m gpu_cdi_fakehost`): build-lib, build, list, event."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gpu_cdi_fakehost import compile as cc
from gpu_cdi_fakehost.builder import LAYOUTS, BuildError, build_host
from gpu_cdi_fakehost.events import EventError, EventInjector
from gpu_cdi_fakehost.topology import TopologyError, shipped_topologies


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpu-cdi-fakehost", description="Fake NVIDIA hosts for testing gpu-cdi without a GPU."
    )
    sub = p.add_subparsers(dest="command", required=True)
    lib = sub.add_parser("build-lib", help="compile and cache the fake libnvidia-ml.so.1")
    lib.add_argument("--force", action="store_true", help="rebuild even if cached")
    b = sub.add_parser("build", help="build a fake host from a topology")
    b.add_argument("--topology", required=True, help="shipped topology name or YAML file")
    b.add_argument("--root", required=True, help="directory to build the host in")
    b.add_argument("--driver-version", help="driver version to install instead of the topology's")
    b.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="host",
        help="host: driver installed in the root; driver-container: in <root>/run/nvidia/driver",
    )
    b.add_argument("--replace", action="store_true", help="replace a fake host already in --root")
    b.add_argument("--no-device-nodes", action="store_true", help="do not mknod even as root")
    sub.add_parser("list", help="list shipped topologies")
    ev = sub.add_parser(
        "event",
        help="inject an NVML event into a built host (its running processes see it)",
        description="DEVICE is a GPU index, GPU:MIG index or UUID. Kinds: xid DEVICE XID "
        "[GI CI]; ecc-sbe DEVICE; ecc-dbe DEVICE; lost DEVICE (XID 79, then GPU_IS_LOST); "
        "recovered DEVICE; wait-error [ERROR] (default UNKNOWN).",
    )
    ev.add_argument("--root", required=True, help="the fake host's directory")
    ev.add_argument("kind", choices=_EVENT_ARGS, help="what happens")
    ev.add_argument("args", nargs="*", help="DEVICE and values, per kind")
    return p


# event kind -> (min, max) number of arguments
_EVENT_ARGS = {
    "xid": (2, 4),
    "ecc-sbe": (1, 1),
    "ecc-dbe": (1, 1),
    "lost": (1, 1),
    "recovered": (1, 1),
    "wait-error": (0, 1),
}


def _event(root: str, kind: str, args: list[str]) -> str:
    low, high = _EVENT_ARGS[kind]
    if not low <= len(args) <= high or (kind == "xid" and len(args) == 3):
        raise EventError(f"{kind}: wrong number of arguments (see --help)")
    inj = EventInjector.for_root(Path(root))
    if kind == "wait-error":
        error = args[0] if args else "UNKNOWN"
        return inj.fail_wait(int(error) if error.isdigit() else error)
    device: int | str = int(args[0]) if args[0].isdigit() else args[0]
    if kind == "xid":
        numbers = []
        for a in args[1:]:
            if not a.isdigit():
                raise EventError(f"xid: not a number: {a!r}")
            numbers.append(int(a))
        gi, ci = numbers[1:] if len(numbers) == 3 else (None, None)
        return inj.xid(device, numbers[0], gi, ci)
    if kind == "lost":
        return inj.lose(device)
    if kind == "recovered":
        return inj.recover(device)
    return inj.ecc(device, double_bit=kind == "ecc-dbe")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = _parser().parse_args(argv)
    if args.command == "build-lib":
        return cc.main_build_lib(force=args.force)
    if args.command == "list":
        print("\n".join(shipped_topologies()))
        return 0
    if args.command == "event":
        if not args.root:
            print("gpu-cdi-fakehost: --root: empty", file=sys.stderr)
            return 2
        try:
            print(_event(args.root, args.kind, args.args))
        except EventError as e:
            print(f"gpu-cdi-fakehost: {e}", file=sys.stderr)
            return 2
        return 0
    for flag, value in (("--topology", args.topology), ("--root", args.root)):
        if not value:
            print(f"gpu-cdi-fakehost: {flag}: empty", file=sys.stderr)
            return 2
    start = time.monotonic()
    try:
        host = build_host(
            args.topology,
            args.root,
            driver_version=args.driver_version,
            layout_name=args.layout,
            device_nodes=False if args.no_device_nodes else None,
            replace=args.replace,
        )
    except (TopologyError, BuildError, cc.BuildError) as e:
        print(f"gpu-cdi-fakehost: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        what = f"{e.filename}: {e.strerror}" if e.filename else str(e)
        print(f"gpu-cdi-fakehost: cannot build in {args.root}: {what}", file=sys.stderr)
        return 2
    elapsed = time.monotonic() - start
    t = host.topology
    print(
        f"# built fake host {t.name!r} in {elapsed:.2f}s: {len(t.gpus)} GPUs, "
        f"{len(t.mig_devices)} MIG devices, driver {t.driver_version}, layout {host.layout}",
        file=sys.stderr,
    )
    for note in host.notes:
        print(f"# note: {note}", file=sys.stderr)
    print(host.command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
