"""Shared fixtures. Each area keeps its own fixtures next to its tests; pytest plugins of
shared fixtures (fake host, containerd) are registered here."""

pytest_plugins = [
    "tests.conformance.fixtures",
    "tests.e2e.fixtures",
    "gpu_cdi_fakehost.pytest_plugin",
]
