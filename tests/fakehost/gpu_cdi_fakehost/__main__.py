"""`gpu-cdi-fakehost` (and `python -m gpu_cdi_fakehost`): build-lib, build, list."""

from __future__ import annotations

import argparse
import sys
import time

from gpu_cdi_fakehost import compile as cc
from gpu_cdi_fakehost.builder import LAYOUTS, BuildError, build_host
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
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = _parser().parse_args(argv)
    if args.command == "build-lib":
        return cc.main_build_lib(force=args.force)
    if args.command == "list":
        print("\n".join(shipped_topologies()))
        return 0
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
        # a half-built root is left for inspection; --replace rebuilds it
        print(f"gpu-cdi-fakehost: cannot build in {args.root}: {e}", file=sys.stderr)
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
