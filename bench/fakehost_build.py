"""Time building fake hosts (gpu-cdi-fakehost) per shipped topology.

    python bench/fakehost_build.py [--runs N] [--dir DIR]

The fake NVML and the stub template are compiled first (cached, not timed), as `make fixtures`
does. Each run builds into a fresh directory (creation and removal of the previous one are not
timed). Device nodes are made when run as root, as in CI. Targets: dgx-a100 < 2 s,
scale-64 (64 GPUs, 448 MIG devices) < 10 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gpu_cdi_fakehost.builder import build_host
from gpu_cdi_fakehost.compile import build_fake_nvml, build_stub_template
from gpu_cdi_fakehost.topology import load_topology

TARGETS = {"dgx-a100": 2.0, "scale-64": 10.0}
TOPOLOGIES = ["dgx-a100", "dgx-a100-mig", "dgx-h100", "workstation", "scale-64"]


def main() -> int:
    """Print one row per topology: median and max build time, files created, target."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None, help="where to build (default: a tempdir)")
    args = ap.parse_args()
    t0 = time.monotonic()
    build_fake_nvml()
    build_stub_template()
    print(f"fake NVML + stub template ready in {time.monotonic() - t0:.2f}s (cached after first)")
    base = Path(tempfile.mkdtemp(prefix="fakehost-bench-", dir=args.dir))
    failed = False
    print(f"{'topology':<14}{'GPUs':>6}{'MIG':>6}{'entries':>9}{'median s':>10}{'max s':>8}"
          f"{'target s':>10}  result")  # fmt: skip
    try:
        for name in TOPOLOGIES:
            topo = load_topology(name)
            times = []
            entries = 0
            for i in range(args.runs):
                root = base / f"{name}-{i}"
                start = time.monotonic()
                build_host(topo, root)
                times.append(time.monotonic() - start)
                entries = sum(len(d) + len(f) for _, d, f in os.walk(root))
                shutil.rmtree(root)
            target = TARGETS.get(name)
            ok = target is None or max(times) < target
            failed |= not ok
            print(
                f"{name:<14}{len(topo.gpus):>6}{len(topo.mig_devices):>6}{entries:>9}"
                f"{statistics.median(times):>10.3f}{max(times):>8.3f}"
                f"{(f'{target:.1f}' if target else '-'):>10}  {'ok' if ok else 'SLOW'}"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
