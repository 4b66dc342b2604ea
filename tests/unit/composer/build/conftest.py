"""Fixtures the build phase's tests share with the definition tests."""

from tests.unit.composer.definition.conftest import ws  # noqa: F401 (the fixture)
