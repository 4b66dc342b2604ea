"""fleet_lock in the image definition reaches the image's policy.json, which hostd reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from composer.build import trust
from composer.core.errors import KeelError
from hostd.fleetlock import FleetLockConfig
from hostd.policy import load_policy
from tests.unit.conftest import Project

DEFINITION = """
    name: demo
    version: "1.0.0"
    partitions: {esp: 64MiB, root: 256MiB, var: 256MiB}
    update:
      reboot: fleet_lock
      window: {days: [Sat], start: "03:00", duration: 1h}
      fleet_lock: {base_url: "http://10.0.2.2:3333/", group: web%s}
"""


def test_fleet_lock_is_baked_and_read_by_hostd(project: Project, tmp_path: Path) -> None:
    defn = project.load(DEFINITION % "")
    trust.bake_update_trust(defn, tmp_path / "tree")
    baked = tmp_path / "tree/usr/lib/keel/update/policy.json"
    assert json.loads(baked.read_text())["fleet_lock"] == {
        "base_url": "http://10.0.2.2:3333/",
        "group": "web",
        "on_failure": "hold",
    }
    policy = load_policy(baked, tmp_path / "no-host-file.json")
    assert policy.reboot == "fleet_lock"
    assert policy.fleet_lock == FleetLockConfig("http://10.0.2.2:3333/", "web", "hold")


def test_on_failure_and_group_are_checked_by_the_schema(project: Project) -> None:
    with pytest.raises(KeelError, match="on_failure"):
        project.load(DEFINITION % ", on_failure: forget")


def test_fleet_lock_needs_a_server(project: Project, tmp_path: Path) -> None:
    defn = project.load((DEFINITION % "").replace('base_url: "http://10.0.2.2:3333/", ', ""))
    with pytest.raises(KeelError, match="base_url is empty"):
        trust.bake_update_trust(defn, tmp_path / "tree")
