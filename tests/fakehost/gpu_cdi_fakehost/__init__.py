"""Fake NVIDIA host for gpu-cdi tests: a fake libnvidia-ml.so.1 and a driver-root builder."""

from __future__ import annotations

from gpu_cdi_fakehost.builder import BuildError, FakeHost, build_host
from gpu_cdi_fakehost.topology import Topology, TopologyError, load_topology

__all__ = ["BuildError", "FakeHost", "Topology", "TopologyError", "build_host", "load_topology"]
