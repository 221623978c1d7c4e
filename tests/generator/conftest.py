"""Fixtures of the generator tests."""

from tests.generator.consumers import consumer_specs
from tests.generator.hosts import hosts

__all__ = ["consumer_specs", "hosts"]
