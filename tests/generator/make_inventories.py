"""Regenerate specs/inventories/ from the shipped topologies: build each fake host, run
`gpu-cdi inventory` on it, and record the roots as `/` (the inventory then describes the host
as nvidia-ctk saw it). Needs root (mknod). Usage: python -m tests.generator.make_inventories
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.generator.hosts import INVENTORIES, TOPOLOGIES, gpu_cdi, host_args


def inventory_text(topology: str, base: Path) -> str:
    """`gpu-cdi inventory` of a freshly built fake host for `topology`, rooted at `/`."""
    from gpu_cdi_fakehost.builder import build_host

    host = build_host(topology, base / topology)
    proc = gpu_cdi(["inventory", *host_args(host)], host)
    if proc.returncode != 0:
        raise RuntimeError(f"gpu-cdi inventory failed for {topology}: {proc.stderr}")
    text = proc.stdout
    for root in {str(host.driver_root), str(host.dev_root)}:
        text = text.replace(f"Root: {root}\n", "Root: /\n")
    return text


def main() -> int:
    """Write specs/inventories/<topology>.yaml for every topology."""
    INVENTORIES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as base:
        for topology in sorted(p.stem for p in TOPOLOGIES.glob("*.yaml")):
            (INVENTORIES / f"{topology}.yaml").write_text(inventory_text(topology, Path(base)))
            print(f"specs/inventories/{topology}.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
