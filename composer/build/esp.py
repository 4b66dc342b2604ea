"""The EFI System Partition's content: systemd-boot, and per populated slot the kernel,
the initrd and a loader entry with a tries counter (naming scheme: hostd/bootentry.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

from composer.core.errors import KeelError
from composer.definition.model import ImageDefinition
from hostd.formats import bootentry

SYSTEMD_BOOT = "usr/lib/systemd/boot/efi/systemd-bootx64.efi"


def populate_esp(
    defn: ImageDefinition, tree: Path, esp: Path, *, slot: str, kernel: Path, initrd: Path
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
    (esp / "loader/entries").mkdir(parents=True)
    (esp / "loader/loader.conf").write_text(bootentry.loader_conf())
    for source, dest in (
        (kernel, bootentry.kernel_path(slot)),
        (initrd, bootentry.initrd_path(slot)),
    ):
        (esp / dest.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, esp / dest.lstrip("/"))
    entry = bootentry.BootEntry(defn.name, defn.version, slot, defn.kernel.cmdline)
    (esp / "loader/entries" / bootentry.entry_filename(defn.version, slot)).write_text(
        entry.render()
    )
    return esp


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
