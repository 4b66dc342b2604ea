"""The updater end to end on files: a real TUF repository (keel keygen + publish),
slots as plain files, the ESP as a folder. Every refusal must leave the inactive
slot byte for byte as it was."""

from __future__ import annotations

import json
import shutil
import tarfile
from datetime import timedelta
from pathlib import Path

import pytest

from composer.publish import keys, repository
from hostd import cli
from hostd.updater import Refused
from tests.unit.hostd.hosts import SLOT_SIZE, VAR_SIZES, Host, boot, entries, make_bundle


def test_update_writes_the_inactive_slot_then_the_entry(host: Host) -> None:
    host.publish("2.0.0")
    before_a = host.slot_digest("a")
    assert host.updater.check()["available"] == "2.0.0"
    result = host.updater.update()
    assert result == {"result": "installed", "version": "2.0.0", "rebooting": False}
    assert host.slot_digest("a") == before_a
    assert entries(host) == ["keel-1.0.0-a.conf", "keel-2.0.0-b+3.conf"]
    assert (host.root / "esp/keel/b/keel.efi").read_bytes() == b"unified kernel image 2.0.0"
    entry = (host.root / "esp/loader/entries/keel-2.0.0-b+3.conf").read_text()
    assert "options root=PARTLABEL=root-b rootfstype=erofs ro keel.slot=b console=ttyS0" in entry
    assert host.updater.status()["phase"] == "installed"
    assert not list((host.root / "state").glob("*.keelbundle*"))  # download removed


def test_booting_and_blessing_the_new_version_succeeds(host: Host) -> None:
    host.publish("2.0.0")
    host.updater.update(reboot=True)
    assert host.reboots == ["reboot"]
    boot(host, "b", "2.0.0")
    assert host.updater.reconcile().phase == "trial"
    entries_dir = host.root / "esp/loader/entries"
    (entries_dir / "keel-2.0.0-b+3.conf").rename(entries_dir / "keel-2.0.0-b.conf")  # blessed
    status = host.updater.status()
    assert status["phase"] == "idle"
    assert status["last_result"]["result"] == "succeeded"
    assert status["booted"]["version"] == "2.0.0" and status["other"]["version"] == "1.0.0"


def test_an_entry_out_of_tries_is_an_automatic_rollback(host: Host) -> None:
    host.publish("2.0.0")
    host.updater.update()
    entries_dir = host.root / "esp/loader/entries"
    (entries_dir / "keel-2.0.0-b+3.conf").rename(entries_dir / "keel-2.0.0-b+0-3.conf")
    boot(host, "a", "1.0.0")
    status = host.updater.status()
    assert status["last_result"]["result"] == "rolled-back"
    assert "did not finish booting within 3 tries" in status["last_result"]["reason"]
    assert "2.0.0" in status["failed_versions"]
    assert host.updater.check()["available"] is None  # never offered again
    with pytest.raises(Refused, match="failed on this host before"):
        host.updater.update(bundle=next((host.root / "work").glob("bundle-2.0.0/*")))


def test_a_failed_health_check_is_named_after_the_rollback(host: Host) -> None:
    host.publish("2.0.0")
    host.updater.update()
    (host.root / "state/health.json").write_text(json.dumps(
        {"version": "2.0.0", "result": "failed", "reason": "/etc/keel/health.d/app exited 1"}
    ))  # fmt: skip
    entries_dir = host.root / "esp/loader/entries"
    (entries_dir / "keel-2.0.0-b+3.conf").rename(entries_dir / "keel-2.0.0-b+0-1.conf")
    boot(host, "a", "1.0.0")
    reason = host.updater.status()["last_result"]["reason"]
    assert reason == "health check failed: /etc/keel/health.d/app exited 1"


def test_rollback_switches_entries_and_keeps_the_new_version_from_returning(host: Host) -> None:
    host.publish("2.0.0")
    host.updater.update()
    boot(host, "b", "2.0.0")
    entries_dir = host.root / "esp/loader/entries"
    (entries_dir / "keel-2.0.0-b+3.conf").rename(entries_dir / "keel-2.0.0-b.conf")
    host.updater.reconcile()
    result = host.updater.rollback()
    assert result == {"result": "rolled-back", "to": "1.0.0", "rebooting": True}
    assert entries(host) == ["keel-1.0.0-a+3.conf", "keel-2.0.0-b+0-0.conf"]
    boot(host, "a", "1.0.0")
    assert host.updater.check()["available"] is None


def test_nothing_to_roll_back_to(host: Host) -> None:
    with pytest.raises(Refused, match="slot b holds no bootable version"):
        host.updater.rollback()


@pytest.mark.parametrize("case", ["tampered", "truncated"])
def test_a_changed_bundle_is_refused_without_writing(host: Host, case: str) -> None:
    host.publish("2.0.0")
    stored = next(host.repo.glob("targets/**/*.keelbundle"))
    data = bytearray(stored.read_bytes())
    if case == "tampered":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 2 :]
    stored.write_bytes(bytes(data))
    before = host.slot_digest("b")
    with pytest.raises(Refused, match=r"does not match the signed targets metadata|longer than"):
        host.updater.update()
    assert host.slot_digest("b") == before
    assert host.updater.status()["last_result"]["result"] == "refused"
    assert entries(host) == ["keel-1.0.0-a.conf"]


def test_a_local_bundle_file_must_be_in_the_signed_metadata(host: Host, tmp_path: Path) -> None:
    host.publish("2.0.0")
    stray = make_bundle(tmp_path / "stray", "2.0.0")  # same version, different bytes
    before = host.slot_digest("b")
    with pytest.raises(Refused, match="not a bundle the repository's signed targets"):
        host.updater.update(bundle=stray)
    assert host.slot_digest("b") == before
    signed = next((host.root / "work").glob("bundle-2.0.0/*.keelbundle"))
    assert host.updater.update(bundle=signed)["result"] == "installed"


def test_expired_metadata_is_refused(host: Host) -> None:
    path = make_bundle(host.root / "work", "2.0.0")
    repository.publish(host.repo, path, host.keys, expiries={"timestamp": timedelta(0)})
    before = host.slot_digest("b")
    with pytest.raises(Refused, match="expired"):
        host.updater.update()
    assert host.slot_digest("b") == before


def test_metadata_signed_by_other_keys_is_refused(host: Host, tmp_path: Path) -> None:
    keys.generate_keys(tmp_path / "other-keys")
    path = make_bundle(host.root / "work", "2.0.0")
    repository.publish(host.repo, path, tmp_path / "other-keys")
    with pytest.raises(Refused, match=r"not signed by the keys this image trusts|trust"):
        host.updater.update()


def test_older_version_refused_and_other_image_ignored(host: Host) -> None:
    host.publish("0.9.0")
    host.publish("3.0.0", name="other-image")
    assert host.updater.update() == {"result": "up-to-date", "version": "1.0.0"}
    old = next((host.root / "work").glob("bundle-0.9.0/*.keelbundle"))
    with pytest.raises(Refused, match=r"not newer than the booted 1\.0\.0"):
        host.updater.update(bundle=old)


def test_a_root_image_larger_than_the_slot_is_refused(host: Host) -> None:
    host.publish("2.0.0", root_size=SLOT_SIZE + 1)
    before = host.slot_digest("b")
    with pytest.raises(Refused, match="does not fit slot b"):
        host.updater.update()
    assert host.slot_digest("b") == before


def test_an_interrupted_write_is_retried_and_never_booted(host: Host) -> None:
    host.publish("2.0.0")
    # An earlier attempt died mid-write: the state says so, slot b holds garbage and
    # still has an old entry from before (it must go before the slot is written).
    store = host.updater.store
    store.transition(store.load(), "writing-slot", target_version="2.0.0", target_slot="b")
    entries_dir = host.root / "esp/loader/entries"
    shutil.copy(entries_dir / "keel-1.0.0-a.conf", entries_dir / "keel-0.5.0-b.conf")
    boot(host, "a", "1.0.0")
    assert host.updater.status()["last_result"]["result"] == "interrupted"
    assert host.updater.update()["result"] == "installed"
    assert entries(host) == ["keel-1.0.0-a.conf", "keel-2.0.0-b+3.conf"]


def test_bundle_members_are_checked_against_bundle_json(host: Host, tmp_path: Path) -> None:
    from hostd.formats.bundle import Bundle, BundleError

    good = make_bundle(tmp_path, "2.0.0")
    bad = tmp_path / "bad.keelbundle"
    with tarfile.open(good) as source, tarfile.open(bad, "w", format=tarfile.USTAR_FORMAT) as dest:
        for member in source.getmembers():
            if member.name != "keel.efi":
                dest.addfile(member, source.extractfile(member))
    with pytest.raises(BundleError, match=r"lacks keel\.efi"):
        Bundle(bad)


def test_status_shows_the_size_of_var(host: Host) -> None:
    status = host.updater.status()
    assert status["var"] == VAR_SIZES
    assert (
        "var:      19.0 GiB (18.0 GiB free) on vda4, a 19.0 GiB partition of a 20.0 GiB disk"
        in cli.show_status(status)
    )
