"""Fixtures of the generator tests."""

from tests.generator.hosts import hosts

__all__ = ["hosts"]
