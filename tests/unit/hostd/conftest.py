"""The `host` fixture: see hosts.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.hostd.hosts import Host, make_host


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return make_host(tmp_path)
