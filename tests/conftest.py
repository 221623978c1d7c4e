"""Shared fixtures. Each area keeps its own fixtures next to its tests; pytest plugins of
shared fixtures (fake host, containerd) are registered here."""
