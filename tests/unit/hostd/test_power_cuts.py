"""Power cuts between changing the ESP and saving the state (issue 12, item 5). The cut
is a BaseException raised at the exact point, which no `except Exception` handles;
then a fresh Updater on the same files stands for hostd after the reboot."""

from __future__ import annotations

import json

import pytest

from hostd.esp import Entry, EspTree
from hostd.formats import bootentry
from tests.unit.hostd.hosts import Host, boot, entries


class PowerCut(BaseException):
    """The power goes: nothing after this point runs."""


def cut_after(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """EspTree.method does its work on the ESP, then the power goes."""
    real = getattr(EspTree, method)

    def then_cut(self: EspTree, *args: object, **kwargs: object) -> object:
        real(self, *args, **kwargs)
        raise PowerCut

    monkeypatch.setattr(EspTree, method, then_cut)


def cut_before(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    def cut(self: EspTree, *args: object, **kwargs: object) -> object:
        raise PowerCut

    monkeypatch.setattr(EspTree, method, cut)


def booted_and_blessed_2_0_0(host: Host) -> None:
    host.publish("2.0.0")
    host.updater.update()
    boot(host, "b", "2.0.0")
    entries_dir = host.root / "esp/loader/entries"
    (entries_dir / "keel-2.0.0-b+3.conf").rename(entries_dir / "keel-2.0.0-b.conf")
    assert host.updater.status()["last_result"]["result"] == "succeeded"


def test_a_cut_after_the_rollback_switched_entries_does_not_bring_the_version_back(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    booted_and_blessed_2_0_0(host)
    cut_after(monkeypatch, "mark_bad")  # the rollback's last step on the ESP
    with pytest.raises(PowerCut):
        host.updater.rollback()
    monkeypatch.undo()
    assert entries(host) == ["keel-1.0.0-a+3.conf", "keel-2.0.0-b+0-0.conf"]
    boot(host, "a", "1.0.0")  # what systemd-boot boots now
    assert host.updater.update() == {"result": "up-to-date", "version": "1.0.0"}
    assert "2.0.0" in host.updater.status()["failed_versions"]
    assert entries(host) == ["keel-1.0.0-a+3.conf", "keel-2.0.0-b+0-0.conf"]


def test_a_cut_before_the_rollback_touched_the_esp_can_roll_back_again(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not a regression test: the rollback now saves first, and this shows that a cut
    # right after the save leaves a host that still boots 2.0.0 and can roll back.
    booted_and_blessed_2_0_0(host)
    cut_before(monkeypatch, "write_entry")
    with pytest.raises(PowerCut):
        host.updater.rollback()
    monkeypatch.undo()
    assert entries(host) == ["keel-1.0.0-a.conf", "keel-2.0.0-b.conf"]
    boot(host, "b", "2.0.0")
    assert host.updater.rollback()["result"] == "rolled-back"
    assert entries(host) == ["keel-1.0.0-a+3.conf", "keel-2.0.0-b+0-0.conf"]


def test_a_cut_after_the_install_wrote_the_entry_keeps_the_version_tracked(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.publish("2.0.0")
    cut_after(monkeypatch, "write_entry")
    with pytest.raises(PowerCut):
        host.updater.update()
    monkeypatch.undo()
    assert entries(host) == ["keel-1.0.0-a.conf", "keel-2.0.0-b+3.conf"]
    # systemd-boot boots the new entry, and hostd must know what it is trying.
    boot(host, "b", "2.0.0")
    status = host.updater.status()
    assert (status["phase"], status["target_version"]) == ("trial", "2.0.0")
    # Its health check fails: the entry is marked bad and the host falls back to 1.0.0.
    (host.root / "state/health.json").write_text(
        json.dumps({"version": "2.0.0", "result": "failed", "reason": "app exited 1"})
    )
    host.updater.esp.mark_bad(Entry("keel-2.0.0-b+3.conf", "2.0.0", "b", 3, None))
    boot(host, "a", "1.0.0")
    status = host.updater.status()
    assert status["last_result"]["result"] == "rolled-back"
    assert status["failed_versions"]["2.0.0"] == "health check failed: app exited 1"
    assert host.updater.update() == {"result": "up-to-date", "version": "1.0.0"}


def test_a_cut_before_the_install_wrote_the_entry_is_an_interruption(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not a regression test: the case reconcile() must keep telling apart from the one
    # above. No entry for slot b, so 1.0.0 boots and the update may be retried.
    host.publish("2.0.0")
    cut_before(monkeypatch, "write_entry")
    with pytest.raises(PowerCut):
        host.updater.update()
    monkeypatch.undo()
    assert entries(host) == ["keel-1.0.0-a.conf"]
    boot(host, "a", "1.0.0")
    assert host.updater.status()["last_result"]["result"] == "interrupted"
    assert host.updater.update()["result"] == "installed"
    assert entries(host) == [
        "keel-1.0.0-a.conf",
        bootentry.entry_filename("2.0.0", "b", bootentry.DEFAULT_TRIES),
    ]
