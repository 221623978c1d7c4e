"""Inventory files: round trip, and errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdi.nvidia import inventory
from tests.generator.hosts import INVENTORIES
from tests.require import need


def _shipped() -> inventory.Inventory:
    path = INVENTORIES / "dgx-a100-mig.yaml"
    need(path.is_file(), f"{path} not shipped yet")
    return inventory.load(str(path))


def test_round_trip(tmp_path: Path) -> None:
    inv = _shipped()
    path = tmp_path / "inv.yaml"
    path.write_text(inventory.dump(inv))
    assert inventory.load(str(path)) == inv
    assert inv.gpus[0].mig_enabled and len(inv.gpus[1].migs) == 3
    assert inv.gpus[1].migs[2].caps == (
        "/dev/nvidia-caps/nvidia-cap156",
        "/dev/nvidia-caps/nvidia-cap158",
    )


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d.pop("driverVersion"), "inventory: missing field 'driverVersion'"),
        (lambda d: d.update(inventory=1), "format 1 is not supported (only 2): write it again"),
        (lambda d: d.update(colour="red"), "inventory: unknown field 'colour'"),
        (lambda d: d["gpus"][1].update(minor=-1), "gpus[1].minor: expected a non-negative integer"),
        (
            lambda d: d["gpus"][0]["migs"][0].update(uuid=7),
            "gpus[0].migs[0].uuid: expected a string",
        ),
        (
            lambda d: d["nodes"][0].update(mode="rw"),
            "nodes[0].mode: expected octal permission bits",
        ),
        (lambda d: d["files"][0].update(kind="music"), "files[0].kind: 'music' is not one of"),
        (
            lambda d: d["libraries"][0].update(path="lib.so"),
            "libraries[0].path: expected an absolute",
        ),
        (lambda d: d.update(gpus={}), "inventory.gpus: expected a list"),
    ],
)
def test_errors_name_the_field(change: object, says: str) -> None:
    data = inventory.to_data(_shipped())
    change(data)  # type: ignore[operator]
    with pytest.raises(inventory.InventoryError) as error:
        inventory.from_data(data, "host.yaml")
    assert str(error.value).startswith("host.yaml: ")
    assert says in str(error.value)


def test_not_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpus: [\n")
    with pytest.raises(inventory.InventoryError, match="not a YAML inventory"):
        inventory.load(str(bad))
