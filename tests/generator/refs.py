"""The nvidia-ctk 1.20.0 reference specs and inventories shared by the generator tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """shared/ beside the work tree (CI has a copy beside its clone)."""
    env = os.environ.get("GPU_CDI_SHARED")
    if env:
        return Path(env)
    for candidate in (ROOT.parent / "shared", Path("/work/shared")):
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared"


REFERENCE = shared_dir() / "reference" / "nvidia-ctk-specs"
# topology name -> nvidia-ctk reference file
REFERENCES = {
    "dgx-a100": "dgxa100.default.yaml",
    "dgx-a100-mig": "dgxa100-mig.default.yaml",
}


def reference(name: str) -> dict[str, Any]:
    """A reference spec as data."""
    path = REFERENCE / name
    with open(path, encoding="utf-8") as stream:
        data: dict[str, Any] = (
            json.load(stream) if name.endswith(".json") else yaml.safe_load(stream)
        )
    return data
