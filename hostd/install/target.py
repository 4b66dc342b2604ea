"""Whether a block device may be overwritten with a Keel disk, decided before a byte is
written; shared by `keelctl install` on a host and `keel install` on the build machine.

Refused: a path that is not a block device, a partition instead of a whole disk, a
disk that holds this machine's own filesystems (the one booted from among them), a
disk in use (a mounted partition, swap, device-mapper or RAID on it), a read-only
disk, and a disk smaller than what is to be written."""

from __future__ import annotations

import os
from dataclasses import dataclass

from hostd.ignition.blockdev import Machine, NotABlockDevice
from hostd.install.errors import InstallError


@dataclass(frozen=True)
class Disk:
    node: str  # /dev/vdb
    name: str  # vdb
    size: int  # bytes
    sector: int  # logical sector size


def gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"


def check_disk(machine: Machine, given: str, needed: int, what: str = "needed") -> Disk:
    """The whole disk at given, or InstallError saying why it may not be written;
    what names the needed size in a refusal ("the image")."""
    try:
        device = machine.device(given)
    except NotABlockDevice as error:
        raise InstallError(str(error)) from None
    if device is None:
        raise InstallError(f"{given} does not exist")
    if device.number is not None:
        raise InstallError(
            f"{given} is partition {device.number} of /dev/{device.disk}, not a whole disk; "
            f"the install writes its own partition table: give /dev/{device.disk}"
        )
    own = machine.os_disks()
    if device.disk in own:
        raise InstallError(
            f"{given} holds this machine's own filesystems ({own[device.disk]} is on it); "
            "refusing to overwrite it"
        )
    users = machine.users(device)
    if users:
        raise InstallError(
            f"{given} is in use: {'; '.join(users)}; unmount its filesystems "
            "(and stop what holds it) first"
        )
    entry = machine.sys / "class/block" / device.name
    if (entry / "ro").is_file() and (entry / "ro").read_text().strip() == "1":
        raise InstallError(f"{given} is read-only")
    sector, sectors = machine.geometry(device)
    size = sector * sectors
    if size < needed:
        raise InstallError(
            f"{given} ({gib(size)}, {size} bytes) is smaller than {what} "
            f"({gib(needed)}, {needed} bytes)"
        )
    return Disk(os.path.realpath(given), device.name, size, sector)


def partition_nodes(machine: Machine, disk: Disk) -> dict[int, str]:
    """Partition number -> device node, as the kernel knows the disk's partitions now
    (vdb1, nvme0n1p1: the names come from sysfs, not from a naming rule)."""
    found = {}
    for entry in (machine.sys / "class/block" / disk.name).glob(f"{disk.name}*"):
        number = entry / "partition"
        if number.is_file():
            found[int(number.read_text().strip())] = f"/dev/{entry.name}"
    return found
