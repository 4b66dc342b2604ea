"""A signed target hostd cannot use (issue 12, item 6) is skipped with a warning in
status, instead of failing every later check and update: old targets stay in the
targets metadata for good."""

from __future__ import annotations

from composer.publish import repository
from hostd import cli
from tests.unit.hostd.hosts import Host, make_bundle


def test_a_target_with_a_version_hostd_rejects_is_skipped_with_a_warning(host: Host) -> None:
    host.publish("2.0.0")
    # Build metadata is no image version (hostd/formats/version.py); `keel publish`
    # would refuse to compare it, so it goes in with --force, signed like any other.
    odd = make_bundle(host.root / "work", "3.0.0+build1")
    repository.publish(host.repo, odd, host.keys, force=True)

    assert host.updater.check()["available"] == "2.0.0"
    status = host.updater.status()
    [warning] = status["warnings"]
    assert "3.0.0+build1" in warning and "not an image version" in warning
    assert f"warning:  {warning}" in cli.show_status(status)
    assert host.updater.update()["result"] == "installed"
    assert host.updater.status()["target_version"] == "2.0.0"
    signed = next((host.root / "work").glob("bundle-2.0.0/*.keelbundle"))
    assert host.updater.update(bundle=signed)["result"] == "already installed"
