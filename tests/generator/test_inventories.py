"""specs/inventories/ is what `gpu-cdi inventory` says about each shipped topology's fake host."""

from __future__ import annotations

import pytest
import yaml

from cdi.nvidia import inventory
from tests.generator.hosts import INVENTORIES, Hosts, gpu_cdi, host_args, topologies
from tests.generator.make_inventories import inventory_text
from tests.require import need


@pytest.mark.parametrize("topology", topologies())
def test_shipped_inventory_is_current(hosts: Hosts, topology: str) -> None:
    shipped = INVENTORIES / f"{topology}.yaml"
    need(shipped.is_file(), f"{shipped} missing: python -m tests.generator.make_inventories")
    hosts.get(topology)  # root and the fake host package are needed
    now = inventory_text(topology, hosts.base / "inventories")
    assert shipped.read_text() == now, "stale: python -m tests.generator.make_inventories"
    inv = inventory.load(str(shipped))
    assert inv.driver_root == inv.dev_root == "/"


def test_inventory_round_trip(hosts: Hosts) -> None:
    host = hosts.get("dgx-a100")
    proc = gpu_cdi(["inventory", *host_args(host)], host)
    assert proc.returncode == 0, proc.stderr
    data = inventory.from_data(yaml.safe_load(proc.stdout), "stdout")
    assert inventory.dump(data) == proc.stdout
    assert len(data.gpus) == 8 and data.driver_version == "550.163.01"
    assert data.driver_root == str(host.driver_root)
