"""A block of the booted root failed its dm-verity check while the host runs (a blessed
boot reads on with an I/O error): hostd says so once and, when the other slot holds a
blessed version, marks this boot's entry bad and reboots into it (issue 15)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from hostd import integrity
from tests.unit.hostd.hosts import Host, entries


def dmsetup(stdout: str, returncode: int = 0) -> Any:
    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert argv == ["dmsetup", "status", "keel-root"]
        return subprocess.CompletedProcess(argv, returncode, stdout, "")

    return run


@pytest.mark.parametrize(
    ("stdout", "returncode", "state"),
    [
        ("0 1985544 verity V\n", 0, integrity.VERIFIED),
        ("0 1985544 verity C\n", 0, integrity.CORRUPTED),
        ("0 1985544 linear \n", 0, None),  # not dm-verity
        ("", 1, None),  # no such device: / is the partition itself
        ("0 1985544 verity X\n", 0, None),
    ],
)
def test_root_verity_reads_dmsetup_status(stdout: str, returncode: int, state: str | None) -> None:
    assert integrity.root_verity(dmsetup(stdout, returncode)) == state


def test_root_verity_without_dmsetup_is_unknown() -> None:
    def missing(argv: list[str], **kwargs: Any) -> Any:
        raise FileNotFoundError("dmsetup")

    assert integrity.root_verity(missing) is None


def blessed_other_slot(host: Host) -> None:
    (host.root / "esp/loader/entries/keel-0.9.0-b.conf").write_text("title old\n")


def test_a_corrupted_root_moves_to_the_blessed_other_slot(host: Host) -> None:
    blessed_other_slot(host)
    host.updater.paths.root_verity = lambda: integrity.CORRUPTED
    host.updater.watch_root()
    assert entries(host) == ["keel-0.9.0-b.conf", "keel-1.0.0-a+0-0.conf"]
    assert host.reboots == ["reboot"]
    status = host.updater.status()
    assert status["root_verity"] == "corrupted"
    last = status["last_result"]
    assert (last["result"], last["version"]) == ("root-corrupted", "1.0.0")
    assert "slot a failed its dm-verity check" in last["reason"]
    assert "rebooting into 0.9.0" in last["reason"]
    assert "1.0.0" not in status["failed_versions"]  # the slot was at fault, not the version
    assert [e["event"] for e in host.updater.history()] == ["root-corrupted"]
    host.updater.watch_root()  # once a boot
    assert host.reboots == ["reboot"]


def test_without_a_blessed_other_slot_it_only_reports(host: Host) -> None:
    host.updater.paths.root_verity = lambda: integrity.CORRUPTED
    host.updater.watch_root()
    assert entries(host) == ["keel-1.0.0-a.conf"]
    assert host.reboots == []
    assert "no blessed version" in host.updater.status()["last_result"]["reason"]


def test_a_verified_root_changes_nothing(host: Host) -> None:
    blessed_other_slot(host)
    host.updater.watch_root()
    assert entries(host) == ["keel-0.9.0-b.conf", "keel-1.0.0-a.conf"]
    assert host.reboots == []
    assert host.updater.status()["last_result"] is None


def test_status_text_names_the_root_check(host: Host) -> None:
    from hostd import cli

    assert "root:     dm-verity, every block read so far" in cli.show_status(host.updater.status())
    host.updater.paths.root_verity = lambda: integrity.CORRUPTED
    assert "CHANGED BLOCK" in cli.show_status(host.updater.status())
    host.updater.paths.root_verity = lambda: None
    assert "root:" not in cli.show_status(host.updater.status())


def test_status_says_whether_secure_boot_is_on(host: Host) -> None:
    from hostd import cli

    assert host.updater.status()["secure_boot"] is False
    assert "boot:     Secure Boot off" in cli.show_status(host.updater.status())
    host.updater.paths.secure_boot = lambda: True
    assert host.updater.status()["secure_boot"] is True
    assert "Secure Boot on" in cli.show_status(host.updater.status())
