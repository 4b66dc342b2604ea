"""What `keelctl install` copies: the booted version, read from the disk it booted from.

The booted slot is found as hostd finds it for updates (the kernel command line and
the device mounted on /, which must agree). Its filesystem's size comes from the erofs
superblock, so only the filesystem is copied, not the rest of the slot; with
dm-verity (keel.verity= on the booted command line) its hash tree after it too, and
the copy's loader entry carries the same keel.verity=. The unified kernel image comes
from the booted slot's file on the ESP (signed as it is, for Secure Boot), and the ESP
mounted on /efi
must be the booted disk's: with two Keel disks attached, a partition label could
lead to the other one."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from hostd import slots
from hostd.formats import bootentry, verity
from hostd.ignition.blockdev import Machine
from hostd.ignition.partitions import Table
from hostd.install.errors import InstallError

ESP = Path("/efi")
KERNEL_CMDLINE = Path("/usr/lib/keel/cmdline")  # written by the build (finalize.py)
FACTORY_VAR = Path("/usr/share/factory/var")  # the var partition's seed, in the image
EROFS_SUPERBLOCK = 1024
EROFS_MAGIC = 0xE0F5E1E2


@dataclass(frozen=True)
class Source:
    name: str
    version: str
    cmdline: tuple[str, ...]  # the image's own, without Keel's root words
    slot: str
    root: str  # the booted slot's device node, /dev/vda2
    root_size: int  # bytes of its filesystem (and dm-verity tree)
    disk: str  # the kernel's name of the disk booted from: vda
    table: Table
    esp: Path  # where the booted disk's ESP is mounted

    def boot_file(self, rel: str) -> Path:
        return self.esp / rel.lstrip("/")

    @property
    def uki(self) -> Path:
        return self.boot_file(bootentry.uki_path(self.slot))


def erofs_size(node: str) -> int:
    """The size in bytes of the erofs filesystem at the start of node (its superblock:
    the block size as a power of two at byte 12, the block count at byte 36)."""
    with open(node, "rb") as handle:
        handle.seek(EROFS_SUPERBLOCK)
        superblock = handle.read(64)
    if len(superblock) < 40 or struct.unpack_from("<I", superblock, 0)[0] != EROFS_MAGIC:
        raise InstallError(f"{node} does not start with an erofs filesystem")
    block_bits = superblock[12]
    blocks = int(struct.unpack_from("<I", superblock, 36)[0])
    if not 9 <= block_bits <= 16 or blocks == 0:
        raise InstallError(f"{node}: the erofs superblock is not one Keel wrote")
    return blocks << block_bits


def _disk_of(machine: Machine, dev: int) -> str:
    entry = (machine.sys / "dev/block" / f"{os.major(dev)}:{os.minor(dev)}").resolve()
    return entry.parent.name if (entry / "partition").is_file() else entry.name


def slot_content_size(node: str, booted_cmdline: list[str]) -> tuple[int, tuple[str, ...]]:
    """The bytes of the booted slot to copy, and the verity argument to keep (if any)."""
    filesystem = erofs_size(node)
    try:
        tree = verity.from_cmdline(booted_cmdline)
    except verity.VerityError as error:
        raise InstallError(str(error)) from None
    if tree is None:
        return filesystem, ()
    if tree.hash_offset != filesystem:
        raise InstallError(
            f"keel.verity= covers {tree.hash_offset} bytes, but {node} holds an erofs "
            f"filesystem of {filesystem}"
        )
    return tree.image_size, (tree.kernel_argument(),)


def booted(
    machine: Machine,
    esp: Path = ESP,
    cmdline_file: Path = KERNEL_CMDLINE,
    proc_cmdline: Path = Path("/proc/cmdline"),
) -> Source:
    try:
        slot = slots.booted_slot()
        release = slots.read_release()
    except (slots.SlotError, OSError) as error:
        raise InstallError(f"cannot tell which version is booted: {error}") from None
    root = os.path.realpath(slots.slot_device(slot))
    device = machine.device(root)
    if device is None:
        raise InstallError(f"the booted slot's device {root} is gone")
    table = machine.table(f"/dev/{device.disk}")
    if table is None:
        raise InstallError(f"/dev/{device.disk}, the disk booted from, has no partition table")
    try:
        os.listdir(esp)  # mounts it, if it is an automount point not mounted yet
        esp_disk = _disk_of(machine, os.stat(esp).st_dev)
    except OSError as error:
        raise InstallError(f"cannot read the ESP at {esp}: {error}") from None
    if esp_disk != device.disk:
        raise InstallError(
            f"{esp} is mounted from {esp_disk}, not from {device.disk}, the disk this host "
            "booted from; detach other Keel disks, reboot, and try again"
        )
    try:
        cmdline = tuple(cmdline_file.read_text().split())
    except FileNotFoundError:
        raise InstallError(
            f"this image has no {cmdline_file}: it was built before `keelctl install` "
            "existed; update the host to a newer version first"
        ) from None
    root_size, verity_words = slot_content_size(root, proc_cmdline.read_text().split())
    source = Source(
        name=release.name,
        version=release.version,
        cmdline=(*cmdline, *verity_words),
        slot=slot,
        root=root,
        root_size=root_size,
        disk=device.disk,
        table=table,
        esp=esp,
    )
    if not source.uki.is_file():
        raise InstallError(f"the booted slot's kernel image is missing from the ESP ({source.uki})")
    if not FACTORY_VAR.is_dir():
        raise InstallError(f"this image has no {FACTORY_VAR} to make a fresh var from")
    return source
