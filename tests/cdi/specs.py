"""Spec texts shared by the CDI core tests."""

from __future__ import annotations

from pathlib import Path


def device_spec(kind: str, *names: str, node: str = "/dev/null", extra: str = "") -> str:
    """A valid YAML spec with one device node per device name (all on `node` on the host)."""
    devices = "".join(
        f'  - name: "{name}"\n    containerEdits:\n'
        f"      deviceNodes: [{{path: /dev/{name}, hostPath: {node}}}]\n"
        for name in names
    )
    return f'cdiVersion: "0.5.0"\nkind: {kind}\n{extra}devices:\n{devices}'


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path
