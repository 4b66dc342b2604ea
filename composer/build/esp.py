"""The EFI System Partition's content: systemd-boot, and per populated slot the unified
kernel image and a loader entry with a tries counter (naming scheme:
hostd/formats/bootentry.py). A Secure Boot build signs systemd-boot here (the UKI was
signed when it was made) and leaves the certificates beside the disk for enrolling."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from composer.build import capacity
from composer.build.context import FIRST_SLOT
from composer.build.filesystems import make_vfat, tree_size
from composer.build.partitions import stable_uuid
from composer.build.uki import sign
from composer.core.errors import KeelError
from composer.definition.model import ImageDefinition
from composer.publish import secureboot
from composer.publish.secureboot import SecureBootKeys
from hostd.formats import bootentry

if TYPE_CHECKING:
    from composer.build.context import BuildContext

SYSTEMD_BOOT = "usr/lib/systemd/boot/efi/systemd-bootx64.efi"


def populate_esp(
    defn: ImageDefinition,
    tree: Path,
    esp: Path,
    *,
    slot: str,
    uki: Path,
    cmdline: tuple[str, ...],
    keys: SecureBootKeys | None = None,
) -> Path:
    """Lay out the ESP in the directory esp, using the bootloader from the image itself."""
    bootloader = tree / SYSTEMD_BOOT
    if not bootloader.exists():
        raise KeelError(
            f"the image has no systemd-boot at /{SYSTEMD_BOOT}",
            hint=f"add 'systemd-boot-efi' to packages in {defn.source}",
        )
    if esp.exists():
        shutil.rmtree(esp)
    # The removable-media path: firmware finds it with no NVRAM boot entry, so a disk
    # written to bare metal boots as it is.
    for dest in ("EFI/BOOT/BOOTX64.EFI", "EFI/systemd/systemd-bootx64.efi"):
        (esp / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bootloader, esp / dest)
        if keys is not None:
            sign(esp / dest, keys)
    (esp / "loader/entries").mkdir(parents=True)
    (esp / "loader/loader.conf").write_text(bootentry.loader_conf())
    slot_uki = esp / bootentry.uki_path(slot).lstrip("/")
    slot_uki.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(uki, slot_uki)
    entry = bootentry.BootEntry(defn.name, defn.version, slot, cmdline)
    (esp / "loader/entries" / bootentry.entry_filename(defn.version, slot)).write_text(
        entry.render()
    )
    return esp


def step(ctx: BuildContext) -> None:
    """The ESP image of a new disk: the first slot's UKI, and room for a second
    slot's."""
    defn = ctx.definition
    keys = ctx.secure_boot_keys
    populate_esp(
        defn,
        ctx.tree,
        ctx.esp_tree,
        slot=FIRST_SLOT,
        uki=ctx.uki,
        cmdline=ctx.kernel_cmdline,
        keys=keys,
    )
    shutil.rmtree(ctx.secure_boot_dir, ignore_errors=True)  # an earlier build's
    if keys is not None:
        secureboot.copy_certificates(keys, ctx.out)
    capacity.check_esp(defn, tree_size(ctx.esp_tree), ctx.uki.stat().st_size)
    make_vfat(
        ctx.esp_tree,
        ctx.esp_image,
        size=defn.partitions.esp,
        label="esp",
        volume_id=stable_uuid(defn.name, defn.version, "esp-fs")[:8],
        epoch=ctx.epoch,
    )
