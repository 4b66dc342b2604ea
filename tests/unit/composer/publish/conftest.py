"""Fixtures the publish tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from composer.publish import keys


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """A fresh set of repository keys (keel keygen)."""
    keys.generate_keys(tmp_path / "keys")
    return tmp_path / "keys"
