"""What bench/nri.py and bench/nri_gpu.py share: the fake host's spec, the Go programs built
against containerd's NRI library, the answers gpu-cdi-nri gives for one GPU."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPU0 = "nvidia.com/gpu=0"


def build_spec_dir(base: Path) -> Path:
    """A spec dir holding what `gpu-cdi generate` writes for a fake DGX A100 (root: mknod)."""
    from gpu_cdi_fakehost.builder import build_host

    from tests.plugin.e2e_support import TOPOLOGY, generate_spec

    host = build_host(TOPOLOGY, base / "host")
    spec_dir = base / "cdi"
    spec_dir.mkdir()
    generate_spec(host, spec_dir / "nvidia.yaml")
    return spec_dir


@functools.cache
def go_binary(program: str) -> str:
    """The path of bench/`program` (nri_go_trivial, nri_go_runtime), built or found up to date
    by bench/nri_go_trivial/build.sh once per run (its callers ask for it per plugin started)."""
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "nri_go_trivial" / "build.sh"), program],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench/nri_go_trivial/build.sh {program} failed (its output is above)")
    return proc.stdout.strip().splitlines()[-1]


def resolved_answer(spec_dir: Path) -> bytes:
    """The ContainerAdjustment gpu-cdi-nri answers in resolve mode for one GPU, serialized:
    what a Go plugin answering the same bytes sends (the anchor it is measured against)."""
    import asyncio

    from cdi.registry import Registry
    from nri_plugin.config import Config
    from nri_plugin.plugin import GpuCdiPlugin
    from nri_plugin.protocol import api

    registry = Registry([str(spec_dir)])
    try:
        plugin = GpuCdiPlugin(Config(spec_dirs=(str(spec_dir),), mode="resolve"), registry)
        asyncio.run(plugin.configure(api.ConfigureRequest(runtime_name="containerd")))
        request = api.CreateContainerRequest()
        request.pod.namespace, request.pod.name = "default", "bench"
        request.container.name = "bench"
        request.container.env.append("NVIDIA_VISIBLE_DEVICES=0")
        response = plugin.adjust(request.pod, request.container)
        assert response is not None
        return bytes(response.adjust.SerializeToString())
    finally:
        registry.close()


def native_answer() -> bytes:
    """The ContainerAdjustment gpu-cdi-nri answers in native mode for one GPU (the runtime
    resolves the name; the spec's env carries NVIDIA_VISIBLE_DEVICES), serialized."""
    from nri_plugin.adjust import native_adjustment

    return bytes(native_adjustment([GPU0]).SerializeToString())
