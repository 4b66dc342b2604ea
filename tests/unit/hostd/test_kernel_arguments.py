"""kernelArguments (issue 13): validated with the config, written at first boot into
the booted slot's loader entry (same file name, so its tries counter stays), kept in
/var/lib/keel/kernel-arguments.json and carried into every entry hostd writes later."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hostd import cmdline
from hostd.esp import GLOBAL_GUID, secure_boot_enabled
from hostd.formats import bootentry
from hostd.ignition.config import ConfigError, parse_config
from hostd.ignition.kernelargs import KernelArguments
from hostd.provision import STATE_FILE, provision
from tests.unit.hostd.hosts import Host, boot, entries

# What systemd-boot left on the first boot: one try counted against the entry.
BOOTED = "keel-1.0.0-a+2-1.conf"
WANTED = {"shouldExist": ["mitigations=auto", "console=ttyS0"], "shouldNotExist": ["quiet"]}


def ignition(version: str = "3.4.0", **sections: Any) -> bytes:
    return json.dumps({"ignition": {"version": version}, **sections}).encode()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A first boot from slot a: accounts, the ESP with the booted entry, a baked config."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    for folder in ("var/lib/keel", "usr/lib/keel", "proc", "efi/loader/entries"):
        (tmp_path / folder).mkdir(parents=True)
    entry = bootentry.BootEntry("docker-host", "1.0.0", "a", ("console=ttyS0", "quiet"))
    (tmp_path / "efi/loader/entries" / BOOTED).write_text(entry.render())
    (tmp_path / "proc/cmdline").write_text(entry.options() + "\n")
    return tmp_path


def bake(root: Path, raw: bytes) -> None:
    (root / "usr/lib/keel/provision.ign").write_bytes(raw)


def booted_options(root: Path) -> str:
    text = (root / "efi/loader/entries" / BOOTED).read_text()
    return next(line for line in text.splitlines() if line.startswith("options "))


# --- validation -----------------------------------------------------------------------


def test_arguments_are_parsed() -> None:
    config = parse_config(ignition(kernelArguments=WANTED))
    assert config.kernel_arguments == KernelArguments(
        ("mitigations=auto", "console=ttyS0"), ("quiet",)
    )


@pytest.mark.parametrize(
    ("word", "reason"),
    [
        ("root=/dev/sda2", "Keel sets itself"),
        ("keel.slot=b", "Keel sets itself"),
        ("rw", "Keel sets itself"),
        ("a b", "without whitespace"),
        ("a\nb", "without whitespace"),
        ("a\0b", "NUL"),  # refused for the whole document already
        ("", "is empty"),
    ],
)
def test_bad_arguments_are_refused_by_name(word: str, reason: str) -> None:
    for key in ("shouldExist", "shouldNotExist"):
        with pytest.raises(ConfigError, match=rf"kernelArguments\.{key}\[0\]'.*{reason}"):
            parse_config(ignition(kernelArguments={key: [word]}))


def test_an_argument_both_wanted_and_not_is_refused() -> None:
    with pytest.raises(ConfigError, match="both shouldExist and shouldNotExist"):
        parse_config(ignition(kernelArguments={"shouldExist": ["a"], "shouldNotExist": ["a"]}))


def test_kernel_arguments_need_spec_3_3() -> None:
    with pytest.raises(ConfigError, match=r"needs ignition\.version 3\.3\.0"):
        parse_config(ignition("3.2.0", kernelArguments=WANTED))


def test_edit_removes_then_appends_the_missing_and_is_idempotent() -> None:
    arguments = KernelArguments(("b=1", "c"), ("quiet",))
    once = cmdline.edit(("quiet", "b=1", "x"), arguments)
    assert once == ("b=1", "x", "c")
    assert cmdline.edit(once, arguments) == once


# --- first boot -------------------------------------------------------------------------


def test_first_boot_edits_the_booted_entry_and_keeps_the_arguments(root: Path) -> None:
    bake(root, ignition(kernelArguments=WANTED))
    state = provision(root)
    assert state["result"] == "applied", state
    assert booted_options(root) == (
        "options root=PARTLABEL=root-a rootfstype=erofs ro keel.slot=a console=ttyS0 "
        "mitigations=auto"
    )
    # Same name: the tries counter is systemd-boot's; no other entry appeared.
    assert sorted(p.name for p in (root / "efi/loader/entries").iterdir()) == [BOOTED]
    assert (root / "efi/loader/entries" / BOOTED).read_text().startswith("title docker-host")
    kept = cmdline.load(root / cmdline.STATE_FILE)
    assert kept == KernelArguments(("mitigations=auto", "console=ttyS0"), ("quiet",))
    assert any("from the next boot" in line for line in state["changes"])


def test_a_second_run_changes_nothing(root: Path) -> None:
    bake(root, ignition(kernelArguments=WANTED))
    provision(root)
    before = (root / "efi/loader/entries" / BOOTED).read_bytes()
    state = provision(root)
    assert state["result"] == "applied", state
    assert all(line.startswith("unchanged") for line in state["changes"]), state["changes"]
    assert (root / "efi/loader/entries" / BOOTED).read_bytes() == before


def test_without_a_booted_entry_nothing_is_applied(root: Path) -> None:
    (root / "efi/loader/entries" / BOOTED).unlink()
    bake(root, ignition(
        storage={"files": [{"path": "/etc/a", "contents": {"source": "data:,x"}}]},
        kernelArguments=WANTED,
    ))  # fmt: skip
    state = provision(root)
    assert state["result"] == "failed"
    assert "no loader entry of the booted slot (a)" in state["error"]
    assert not (root / "etc/a").exists()
    assert not (root / cmdline.STATE_FILE).exists()
    assert json.loads((root / STATE_FILE).read_text())["result"] == "failed"


def test_a_config_without_kernel_arguments_leaves_the_esp_alone(root: Path) -> None:
    (root / "proc/cmdline").unlink()  # not even read
    before = (root / "efi/loader/entries" / BOOTED).read_bytes()
    bake(root, ignition(storage={"files": [{"path": "/etc/a", "contents": {"source": "data:,x"}}]}))
    assert provision(root)["result"] == "applied"
    assert (root / "efi/loader/entries" / BOOTED).read_bytes() == before
    assert not (root / cmdline.STATE_FILE).exists()


# --- updates and rollbacks ------------------------------------------------------------------


def keep_arguments(host: Host, arguments: KernelArguments) -> None:
    host.updater.paths.kernel_arguments.write_bytes(cmdline.to_json(arguments))


def test_an_update_entry_carries_the_host_arguments(host: Host) -> None:
    keep_arguments(host, KernelArguments(("mitigations=auto",), ("panic=10",)))
    host.publish("2.0.0")  # its bundle's command line: console=ttyS0 panic=10
    host.updater.update()
    assert entries(host) == ["keel-1.0.0-a.conf", "keel-2.0.0-b+3.conf"]
    entry = (host.root / "esp/loader/entries/keel-2.0.0-b+3.conf").read_text()
    assert (
        "options root=PARTLABEL=root-b rootfstype=erofs ro keel.slot=b console=ttyS0 "
        "mitigations=auto\n"
    ) in entry


def test_a_host_without_arguments_gets_the_bundle_command_line(host: Host) -> None:
    host.publish("2.0.0")
    host.updater.update()
    entry = (host.root / "esp/loader/entries/keel-2.0.0-b+3.conf").read_text()
    assert "keel.slot=b console=ttyS0 panic=10\n" in entry


def test_a_rollback_entry_carries_the_host_arguments(host: Host) -> None:
    # Slot a's entry predates the arguments (written by the image build).
    keep_arguments(host, KernelArguments(("mitigations=auto",), ()))
    host.publish("2.0.0")
    host.updater.update()
    entries_dir = host.root / "esp/loader/entries"
    (entries_dir / "keel-2.0.0-b+3.conf").rename(entries_dir / "keel-2.0.0-b.conf")
    boot(host, "b", "2.0.0")
    host.updater.reconcile()
    host.updater.rollback(reboot=False)
    entry = (entries_dir / "keel-1.0.0-a+3.conf").read_text()
    assert "keel.slot=a console=ttyS0 mitigations=auto\n" in entry


def test_an_unreadable_arguments_file_does_not_stop_an_update(host: Host) -> None:
    host.updater.paths.kernel_arguments.write_text("{not json")
    host.publish("2.0.0")
    assert host.updater.update()["result"] == "installed"


def test_under_secure_boot_kernel_arguments_are_refused_not_ignored(root: Path) -> None:
    """The stub boots with its signed command line then; an edited entry would change
    nothing, so the config is refused with what to do instead."""
    efivars = root / "sys/firmware/efi/efivars"
    efivars.mkdir(parents=True)
    (efivars / f"SecureBoot-{GLOBAL_GUID}").write_bytes(b"\x06\x00\x00\x00\x01")
    before = (root / "efi/loader/entries" / BOOTED).read_bytes()
    bake(root, ignition(kernelArguments=WANTED))
    state = provision(root)
    assert state["result"] != "applied", state
    assert "under Secure Boot" in json.dumps(state) and "kernel.cmdline" in json.dumps(state)
    assert (root / "efi/loader/entries" / BOOTED).read_bytes() == before


def test_secure_boot_is_read_from_its_efi_variable(tmp_path: Path) -> None:
    assert not secure_boot_enabled(tmp_path)
    variable = tmp_path / f"SecureBoot-{GLOBAL_GUID}"
    variable.write_bytes(b"\x06\x00\x00\x00\x00")
    assert not secure_boot_enabled(tmp_path)
    variable.write_bytes(b"\x06\x00\x00\x00\x01")
    assert secure_boot_enabled(tmp_path)
