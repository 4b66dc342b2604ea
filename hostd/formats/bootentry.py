"""How Keel names and writes systemd-boot loader entries; shared by the composer (first
image) and hostd (updates), so both sides agree on one scheme.

systemd-boot 252 sorts entries by their file name, highest version first, and puts
entries with no tries left last; an explicit `default` naming a bad entry would still
boot it. So entries are named keel-<version>-<slot>, the loader's default is the glob
`keel-*`, and a fresh entry carries a tries counter: keel-<version>-<slot>+3.conf."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TRIES = 3
# How every Keel command line mounts the root: read-only erofs. The loader entry names
# the slot's partition; a UKI's own command line, the same for both slots, names the
# dm-verity device the initrd opens (scripts/local-top/keel-verity).
MOUNT_WORDS = ("rootfstype=erofs", "ro")
VERIFIED_ROOT = "/dev/mapper/keel-root"
LOADER_DEFAULT_GLOB = "keel-*"
SLOTS = ("a", "b")


def slot_label(slot: str) -> str:
    """The GPT partition label of a root slot: root-a or root-b."""
    if slot not in SLOTS:
        raise ValueError(f"unknown slot {slot!r}; Keel has slots {', '.join(SLOTS)}")
    return f"root-{slot}"


def entry_id(version: str, slot: str) -> str:
    return f"keel-{version}-{slot}"


def entry_filename(version: str, slot: str, tries: int | None = DEFAULT_TRIES) -> str:
    """The entry's file name; with tries, a boot-counting name systemd-boot decrements."""
    counter = f"+{tries}" if tries is not None else ""
    return f"{entry_id(version, slot)}{counter}.conf"


# The provisioning config on the ESP (relative to it): `keel install` and `keelctl
# install` put it there, a host's first boot reads it (hostd/provision.py).
ESP_CONFIG = "keel/provision.ign"


def uki_path(slot: str) -> str:
    """Where a slot's unified kernel image lives on the ESP (absolute, as loader
    entries write it)."""
    if slot not in SLOTS:
        raise ValueError(f"unknown slot {slot!r}; Keel has slots {', '.join(SLOTS)}")
    return f"/keel/{slot}/keel.efi"


@dataclass(frozen=True)
class BootEntry:
    image_name: str
    version: str
    slot: str
    cmdline: tuple[str, ...]

    def options(self) -> str:
        root = f"root=PARTLABEL={slot_label(self.slot)}"
        return " ".join((root, *MOUNT_WORDS, f"keel.slot={self.slot}", *self.cmdline))

    def render(self) -> str:
        # A Type #1 entry that starts the slot's UKI (`efi`): systemd-boot counts its
        # tries by this file's name, as for any entry. Without Secure Boot the stub
        # boots with these options instead of its own command line; under Secure Boot
        # it ignores them and uses its signed one, which finds the slot by itself.
        return (
            f"title {self.image_name} {self.version} (slot {self.slot})\n"
            f"version {self.version}\n"
            f"efi {uki_path(self.slot)}\n"
            f"options {self.options()}\n"
        )


def loader_conf() -> str:
    # timeout 0: no menu unless a key is held, which saves seconds on every boot;
    # editor no: the kernel command line cannot be edited from the menu.
    return (
        f"default {LOADER_DEFAULT_GLOB}\ntimeout 0\neditor no\nauto-entries no\nauto-firmware no\n"
    )
