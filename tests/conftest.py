"""Shared fixtures. Each area keeps its own fixtures next to its tests."""
