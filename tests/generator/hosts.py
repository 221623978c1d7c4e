"""Fake hosts for the generator tests (tests/fakehost): built once per session per topology."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.generator.refs import ROOT
from tests.require import need, need_root

TOPOLOGIES = ROOT / "specs" / "topologies"
INVENTORIES = ROOT / "specs" / "inventories"


def topologies() -> list[str]:
    """Names of the shipped topologies."""
    return sorted(p.stem for p in TOPOLOGIES.glob("*.yaml"))


class Hosts:
    """Builds fake hosts on demand under one session temp dir."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.built: dict[tuple[str, str], Any] = {}

    def get(self, topology: str, layout: str = "host") -> Any:
        """The fake host for `topology` (needs root: device nodes are made with mknod)."""
        need_root()
        need((TOPOLOGIES / f"{topology}.yaml").is_file(), f"no topology {topology} yet")
        key = (topology, layout)
        if key not in self.built:
            from gpu_cdi_fakehost.builder import build_host

            self.built[key] = build_host(
                topology, self.base / f"{topology}-{layout}", layout_name=layout
            )
        return self.built[key]


@pytest.fixture(scope="session")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    """Fake hosts by topology name."""
    need(
        importlib.util.find_spec("gpu_cdi_fakehost") is not None,
        "gpu_cdi_fakehost is not installed (pip install -e tests/fakehost)",
    )
    yield Hosts(tmp_path_factory.mktemp("hosts"))


def gpu_cdi(
    args: Sequence[str], host: Any = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `gpu-cdi ARGS` as its own process (against `host`'s fake NVML when given)."""
    full_env = dict(os.environ)
    if host is not None:
        full_env.update(host.env)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cdi", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=120,
    )


def host_args(host: Any) -> list[str]:
    """The flags that point `gpu-cdi generate`/`inventory` at a fake host."""
    return list(host.generate_argv[2:])


def unroot(value: Any, root: str) -> Any:
    """Spec data with `root` stripped from host paths, as if the host root were `/`."""
    if isinstance(value, dict):
        out = {k: unroot(v, root) for k, v in value.items()}
        if out.get("hostPath") == out.get("path") and "path" in out:
            del out["hostPath"]
        return out
    if isinstance(value, list):
        return [unroot(v, root) for v in value]
    if isinstance(value, str) and value.startswith(root + "/"):
        return value[len(root) :]
    return value
