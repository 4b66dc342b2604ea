"""Loader entries on the ESP: names, states, atomic writes, marking bad."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from hostd.esp import EspTree, parse_entry, read_efi_string
from hostd.formats import bootentry
from hostd.formats.bundle import BundleError, Part
from hostd.formats.version import is_newer


@pytest.mark.parametrize(("name", "version", "slot", "state"), [
    ("keel-1.0.0-a.conf", "1.0.0", "a", "good"),
    ("keel-2.0.0-b+3.conf", "2.0.0", "b", "pending"),
    ("keel-2.0.0-b+2-1.conf", "2.0.0", "b", "trying"),
    ("keel-2.0.0-b+0-3.conf", "2.0.0", "b", "bad"),
    ("keel-2.0.0-rc1-a+3.conf", "2.0.0-rc1", "a", "pending"),
])  # fmt: skip
def test_entry_names(name: str, version: str, slot: str, state: str) -> None:
    entry = parse_entry(name)
    assert entry is not None
    assert (entry.version, entry.slot, entry.state) == (version, slot, state)


def test_foreign_and_temporary_files_are_not_entries() -> None:
    assert parse_entry("debian.conf") is None
    assert parse_entry(".keel-2.0.0-b+3.conf.tmp") is None


def test_versions_compare_as_numbers() -> None:
    assert is_newer("1.10.0", "1.9.0")
    assert is_newer("2.0.0", "1.0.0")
    assert not is_newer("1.0.0", "1.0.0")
    assert not is_newer("0.9", "1.0")
    # The same order `keel publish` enforces: a release candidate comes before its
    # release, and trailing zeros do not make a version newer.
    assert is_newer("2.0", "2.0-rc1")
    assert not is_newer("1.2.0", "1.2")


def entry(version: str, slot: str) -> bootentry.BootEntry:
    return bootentry.BootEntry("docker-host", version, slot, ("console=ttyS0",))


def test_write_entry_uses_the_shared_naming_and_leaves_no_temporary(tmp_path: Path) -> None:
    esp = EspTree(tmp_path)
    name = esp.write_entry(entry("2.0.0", "b"))
    assert name == "keel-2.0.0-b+3.conf"
    assert sorted(p.name for p in esp.entries_dir.iterdir()) == [name]
    assert "options root=PARTLABEL=root-b" in (esp.entries_dir / name).read_text()


def test_remove_slot_entries_touches_only_that_slot(tmp_path: Path) -> None:
    esp = EspTree(tmp_path)
    esp.write_entry(entry("1.0.0", "a"), tries=None)  # type: ignore[arg-type]
    esp.write_entry(entry("2.0.0", "b"))
    assert esp.remove_slot_entries("b") == ["keel-2.0.0-b+3.conf"]
    assert [e.filename for e in esp.entries()] == ["keel-1.0.0-a.conf"]


def test_mark_bad_keeps_the_tries_done(tmp_path: Path) -> None:
    esp = EspTree(tmp_path)
    esp.entries_dir.mkdir(parents=True)
    (esp.entries_dir / "keel-2.0.0-b+2-1.conf").write_text("x")
    current = esp.slot_entry("b")
    assert current is not None
    assert esp.mark_bad(current) == "keel-2.0.0-b+0-1.conf"
    again = esp.slot_entry("b")
    assert again is not None and again.state == "bad"


def test_a_boot_file_with_the_wrong_digest_is_not_installed(tmp_path: Path) -> None:
    esp = EspTree(tmp_path)
    data = b"unified kernel image" * 100
    good = Part("keel.efi", None, len(data), hashlib.sha256(data).hexdigest())
    esp.install_boot_file("/keel/b/keel.efi", [data], good)
    assert (tmp_path / "keel/b/keel.efi").read_bytes() == data
    with pytest.raises(BundleError, match="sha256"):
        esp.install_boot_file("/keel/b/keel.efi", [data[:-1] + b"X"], good)
    assert (tmp_path / "keel/b/keel.efi").read_bytes() == data  # the old file stays
    assert sorted(p.name for p in (tmp_path / "keel/b").iterdir()) == ["keel.efi"]


def test_efi_variables_are_utf16_after_four_attribute_bytes(tmp_path: Path) -> None:
    guid = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
    value = "\\loader\\entries\\keel-2.0.0-b+2-1.conf"
    (tmp_path / f"LoaderBootCountPath-{guid}").write_bytes(
        b"\x06\x00\x00\x00" + (value + "\0").encode("utf-16-le")
    )
    assert read_efi_string("LoaderBootCountPath", tmp_path) == value
    assert read_efi_string("LoaderEntrySelected", tmp_path) is None


def test_bless_and_the_counted_entry(tmp_path: Path) -> None:
    esp = EspTree(tmp_path / "esp")
    esp.entries_dir.mkdir(parents=True)
    (esp.entries_dir / "keel-2.0.0-b+2-1.conf").write_text("x")
    efivars = tmp_path / "efivars"
    efivars.mkdir()
    value = "\\loader\\entries\\keel-2.0.0-b+2-1.conf\0"
    (efivars / "LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f").write_bytes(
        b"\x06\x00\x00\x00" + value.encode("utf-16-le")
    )
    counted = esp.counted_boot_entry(efivars)
    assert counted is not None and counted.filename == "keel-2.0.0-b+2-1.conf"
    assert esp.bless(counted) == "keel-2.0.0-b.conf"
    assert [e.state for e in esp.entries()] == ["good"]
    assert esp.counted_boot_entry(efivars) is None  # renamed since
