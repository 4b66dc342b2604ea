"""Test booted Keel images with pytest: see docs/testing.md and composer.testing.plugin."""

from composer.testing.machine import KeelVM

__all__ = ["KeelVM"]
