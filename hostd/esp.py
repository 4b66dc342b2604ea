"""The ESP as hostd changes it: per-slot unified kernel images, and loader entries with
boot counters (naming in hostd/formats/bootentry.py, shared with the composer).

Crash safety rests on two rules:
- a slot's entries are removed (and the removal synced) before a byte of the slot is
  written, so a half-written slot is never booted;
- every file is written under a temporary name, synced, then renamed, and the entry
  goes last, so systemd-boot never sees an entry whose kernel is missing or partial.
FAT has no atomic rename in the POSIX sense, but a rename is one directory update,
and systemd-boot ignores files that do not end in .conf, so a cut mid-way leaves
either the old name or the new one.

A rename on FAT is durable only once the renamed file itself is synced again, so
every write and rename here goes through hostd/files.py, which does that."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hostd.files import fsync_dir, rename_durably, replacing, write_atomically
from hostd.formats import bootentry
from hostd.formats.bundle import Part, check_digest
from hostd.formats.version import version_key

ESP = Path("/efi")
EFIVARS = Path("/sys/firmware/efi/efivars")
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"  # the UEFI spec's own variables
IMAGE_SECURITY_GUID = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"  # db and dbx
_ENTRY = re.compile(
    r"^keel-(?P<version>.+)-(?P<slot>[ab])(?:\+(?P<left>[0-9]+)(?:-(?P<done>[0-9]+))?)?\.conf$"
)


class EspError(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    filename: str
    version: str
    slot: str
    left: int | None  # tries left; None: blessed (no counter)
    done: int | None

    @property
    def state(self) -> str:
        """good (blessed), bad (out of tries), pending (never tried) or trying."""
        if self.left is None:
            return "good"
        if self.left == 0:
            return "bad"
        return "trying" if self.done else "pending"


def parse_entry(filename: str) -> Entry | None:
    match = _ENTRY.match(filename)
    if not match:
        return None
    left, done = match.group("left"), match.group("done")
    return Entry(
        filename,
        match.group("version"),
        match.group("slot"),
        int(left) if left is not None else None,
        int(done) if done is not None else None,
    )


class EspTree:
    """One mounted ESP (tests pass a tmp dir)."""

    def __init__(self, root: Path = ESP) -> None:
        self.root = root
        self.entries_dir = root / "loader/entries"

    def entries(self) -> list[Entry]:
        try:
            names = sorted(os.listdir(self.entries_dir))
        except FileNotFoundError:
            return []
        return [e for e in (parse_entry(n) for n in names) if e is not None]

    def slot_entries(self, slot: str) -> list[Entry]:
        return [e for e in self.entries() if e.slot == slot]

    def slot_entry(self, slot: str) -> Entry | None:
        """The entry that boots slot (the newest, should there be several)."""
        found = self.slot_entries(slot)
        return max(found, key=lambda e: version_key(e.version)) if found else None

    def remove_slot_entries(self, slot: str) -> list[str]:
        """Make slot unbootable before it is overwritten; returns the removed names."""
        removed = []
        for entry in self.slot_entries(slot):
            (self.entries_dir / entry.filename).unlink()
            removed.append(entry.filename)
        if removed:
            fsync_dir(self.entries_dir)
        return removed

    def remove_entry(self, filename: str) -> None:
        """Remove one loader entry, durably."""
        (self.entries_dir / filename).unlink(missing_ok=True)
        fsync_dir(self.entries_dir)

    def slot_uki(self, slot: str) -> Path:
        return self.root / bootentry.uki_path(slot).lstrip("/")

    def slot_boot_files_size(self, slot: str) -> int:
        """Bytes the slot's boot files take (what removing them frees)."""
        uki = self.slot_uki(slot)
        return uki.stat().st_size if uki.exists() else 0

    def remove_slot_boot_files(self, slot: str) -> None:
        """Free the ESP space of a slot whose entries are gone (FAT is small)."""
        self.slot_uki(slot).unlink(missing_ok=True)

    def install_boot_file(self, rel: str, stream: Iterable[bytes], part: Part) -> None:
        """Write a boot file under a temporary name, verify, sync, rename."""
        digest = hashlib.sha256()
        length = 0
        with replacing(self.root / rel.lstrip("/")) as handle:
            for block in stream:
                handle.write(block)
                digest.update(block)
                length += len(block)
            # Inside the block: a wrong digest removes the new file, the old one stays.
            check_digest(part, length, digest.hexdigest())

    def write_entry(self, entry: bootentry.BootEntry, tries: int = bootentry.DEFAULT_TRIES) -> str:
        """Install a loader entry with a fresh tries counter, atomically."""
        name = bootentry.entry_filename(entry.version, entry.slot, tries)
        write_atomically(self.entries_dir / name, entry.render().encode())
        return name

    def options(self, entry: Entry) -> tuple[str, ...]:
        """The words of the entry's `options` line (none if it has no such line)."""
        text = (self.entries_dir / entry.filename).read_text()
        for line in text.splitlines():
            if line.startswith("options "):
                return tuple(line.removeprefix("options ").split())
        return ()

    def set_options(self, entry: Entry, words: tuple[str, ...]) -> bool:
        """Rewrite the entry's `options` line atomically, under the same file name (so
        its tries counter stays as systemd-boot left it); False if already so."""
        path = self.entries_dir / entry.filename
        text = path.read_text()
        lines = [line for line in text.splitlines() if not line.startswith("options ")]
        rewritten = "\n".join([*lines, f"options {' '.join(words)}"]) + "\n"
        if rewritten == text:
            return False
        write_atomically(path, rewritten.encode())
        return True

    def mark_bad(self, entry: Entry) -> str:
        """Rename to +0-DONE: systemd-boot sorts it last and boots another entry."""
        name = f"keel-{entry.version}-{entry.slot}+0-{entry.done or 0}.conf"
        if name != entry.filename:
            rename_durably(self.entries_dir / entry.filename, self.entries_dir / name)
        return name

    def bless(self, entry: Entry) -> str:
        """Drop the counter: the entry has booted well and is tried no more."""
        name = bootentry.entry_filename(entry.version, entry.slot, tries=None)
        if name != entry.filename:
            rename_durably(self.entries_dir / entry.filename, self.entries_dir / name)
        return name

    def counted_boot_entry(self, efivars: Path = EFIVARS) -> Entry | None:
        """The entry systemd-boot counted this boot against (LoaderBootCountPath names
        it, already renamed to the decremented counter), if it is one of Keel's."""
        path = read_efi_string("LoaderBootCountPath", efivars)
        if not path:
            return None
        entry = parse_entry(path.replace("\\", "/").rsplit("/", 1)[-1])
        if entry is None or not (self.entries_dir / entry.filename).exists():
            return None
        return entry

    def free_bytes(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def sync(self) -> None:
        fsync_dir(self.root)


def read_efi_string(name: str, efivars: Path = EFIVARS) -> str | None:
    """A systemd-boot variable (UTF-16LE after 4 attribute bytes), or None if unset."""
    try:
        raw = (efivars / f"{name}-{LOADER_GUID}").read_bytes()
    except OSError:
        return None
    return raw[4:].decode("utf-16-le", errors="replace").rstrip("\0")


def booted_entry_counting(efivars: Path = EFIVARS) -> bool:
    """Whether systemd-boot started this boot from an entry with a tries counter."""
    return read_efi_string("LoaderBootCountPath", efivars) is not None


def secure_boot_enabled(efivars: Path = EFIVARS) -> bool:
    """Whether the firmware enforces Secure Boot (SecureBoot: attributes, then one
    byte, 1 when on)."""
    try:
        raw = (efivars / f"SecureBoot-{GLOBAL_GUID}").read_bytes()
    except OSError:
        return False
    return len(raw) == 5 and raw[4] == 1


def firmware_db(efivars: Path = EFIVARS) -> bytes | None:
    """The firmware's db variable (what it lets start under Secure Boot), or None."""
    try:
        return (efivars / f"db-{IMAGE_SECURITY_GUID}").read_bytes()
    except OSError:
        return None
