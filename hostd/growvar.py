"""Grow var to fill the disk (keel-grow-var.service, early on every boot).

A Keel disk is written at the size of the image, so on a bigger disk the GPT's backup
header sits where the image ended and the var partition (the last one) keeps its
built size. Every boot, before the container engine or anything else that writes
much to /var starts, this:

1. finds the disk from the device actually mounted on /var (never from a label: a
   second disk with a "var" partition must not be touched) and checks that / is on
   the same disk; what is left to do comes from sysfs, the GPT header and the ext4
   superblock, so a boot with nothing to do runs no tool; before any change the
   partition table must show var as a GPT partition of var's type, the only one and
   the last one;
2. moves the backup header to the end of the disk (`sfdisk --relocate gpt-bak-std`):
   systemd-repart writes a table only when a partition changes, so with var at its
   cap (partitions.var_max) it would leave the header where the image ended;
3. grows the var partition with systemd-repart and the image's definition
   (hostd/formats/growth.py: var by type, capped by SizeMaxBytes=); repart only ever
   grows partitions that match a definition, and the checks above leave it exactly
   one, var, with free space only after it;
4. grows the ext4 filesystem online (systemd-growfs /var).

Each step is a no-op once done, so the unit runs on every boot and a later boot
finishes whatever a power cut interrupted: a table write leaves the old table or the
new one (libfdisk writes the backup copy first, the primary last), and in both var
starts where it always did and is at least as large as its filesystem, which only
grows (journaled) after the new table is on the disk and in the kernel. Nothing here
ever shrinks or moves a partition. When a check fails the disk is left as it is, the
reason is logged, and the boot goes on."""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hostd import sysblock
from hostd.formats.growth import VAR_DEFINITION, VAR_TYPE, definition_cap

GROWFS = "/usr/lib/systemd/systemd-growfs"
# Growth smaller than this is not worth a table write or a resize. ext4 also leaves a
# last block group too small for its own metadata unused, so the filesystem may end a
# little short of the partition for good; without slack that would resize every boot.
SLACK = 16 * 1024 * 1024
TOOL_SECONDS = 3600  # an online resize of a very large disk takes a while
EXT4_MAGIC = 0xEF53
EXT4_INCOMPAT_64BIT = 0x80


class LeftAlone(Exception):
    """A reason not to touch the disk."""


def say(message: str) -> None:
    # stdout goes to the journal and the console (keel-grow-var.service).
    print(f"keel-grow-var: {message}", flush=True)


def gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"


@dataclass(frozen=True)
class Partition:
    """A partition as the kernel has it (sysfs), in bytes."""

    name: str  # vda4
    disk: str  # vda
    number: int
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class Entry:
    """A partition table entry as sfdisk reads it from the disk, in bytes."""

    number: int
    start: int
    size: int
    type: str

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class Table:
    sector: int
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Header:
    """What the primary GPT header says of the disk's end, in sectors."""

    sector: int  # the disk's logical sector size in bytes
    alternate_lba: int  # where the backup header is
    last_usable_lba: int


@dataclass(frozen=True)
class Plan:
    relocate: bool  # the backup header is not at the end of the disk
    grow_partition: bool
    target_size: int  # what var may become: to the end of the disk, or the cap


class Host:
    """The running machine; tests point it at a fake /sys, /proc and /dev."""

    def __init__(
        self, root: Path = Path("/"), sys: Path = Path("/sys"), dev: Path = Path("/dev")
    ) -> None:
        self.root = root
        self.sys = sys
        self.dev = dev

    def mount_source(self, mountpoint: str) -> tuple[int, int, str]:
        """(major, minor, filesystem type) of what is mounted on mountpoint."""
        found = None
        for line in (self.root / "proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) > 7 and fields[4] == mountpoint and "-" in fields[6:]:
                fstype = fields[fields.index("-", 6) + 1]
                major, minor = (int(n) for n in fields[2].split(":"))
                found = (major, minor, fstype)  # the last one is the one on top
        if found is None:
            raise LeftAlone(f"nothing is mounted on {mountpoint}")
        return found

    def partition(self, major: int, minor: int) -> Partition:
        entry = (self.sys / "dev/block" / f"{major}:{minor}").resolve()
        if not (entry / "partition").is_file():
            raise LeftAlone(f"{major}:{minor} ({entry.name}) is not a disk partition")
        return Partition(
            name=entry.name,
            disk=entry.parent.name,
            number=int((entry / "partition").read_text()),
            start=int((entry / "start").read_text()) * 512,  # sysfs counts 512-byte units
            size=int((entry / "size").read_text()) * 512,
        )

    def disk_size(self, disk: str) -> int:
        return int((self.sys / "class/block" / disk / "size").read_text()) * 512

    def node(self, name: str) -> Path:
        """/dev/NAME, checked to be the block device the kernel calls NAME."""
        major, minor = (self.sys / "class/block" / name / "dev").read_text().strip().split(":")
        node = self.dev / name
        info = os.stat(node, follow_symlinks=False)
        if not stat.S_ISBLK(info.st_mode) or info.st_rdev != os.makedev(int(major), int(minor)):
            raise LeftAlone(f"{node} is not the block device {major}:{minor}")
        return node

    def run(self, argv: list[str], changes: bool = True) -> str:
        """Run a tool; what a tool that changes the disk prints goes to the log (a
        query's output only when it fails: the console is slow under emulation)."""
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, errors="replace", timeout=TOOL_SECONDS
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise LeftAlone(f"`{' '.join(argv)}` failed: {error}") from None
        shown = result.stdout + result.stderr if changes else result.stderr
        for line in shown.splitlines() if changes or result.returncode else ():
            if line.strip():
                say(f"  {argv[0].rsplit('/', 1)[-1]}: {line.rstrip()}")
        if result.returncode != 0:
            raise LeftAlone(f"`{' '.join(argv)}` failed with exit status {result.returncode}")
        return result.stdout

    def table(self, node: Path) -> Table:
        data = json.loads(self.run(["sfdisk", "--json", str(node)], changes=False))
        data = data["partitiontable"]
        if data.get("label") != "gpt":
            raise LeftAlone(f"{node} has no GPT partition table")
        sector = int(data.get("sectorsize", 512))
        entries = []
        for part in data.get("partitions", []):
            number = part["node"][len(part["node"].rstrip("0123456789")) :]
            entries.append(
                Entry(
                    int(number),
                    int(part["start"]) * sector,
                    int(part["size"]) * sector,
                    str(part["type"]).upper(),
                )
            )
        return Table(sector, tuple(entries))

    def sector_size(self, disk: str) -> int:
        return int((self.sys / "class/block" / disk / "queue/logical_block_size").read_text())

    def gpt_header(self, disk: str, node: Path) -> Header:
        sector = self.sector_size(disk)
        with node.open("rb") as handle:
            handle.seek(sector)
            header = handle.read(92)
        if header[:8] != b"EFI PART":
            raise LeftAlone(f"{node} has no primary GPT header")
        alternate, _, last_usable = struct.unpack_from("<QQQ", header, 32)
        return Header(sector, int(alternate), int(last_usable))

    def filesystem_size(self, node: Path) -> int:
        """The size of the ext4 filesystem on node, from its superblock."""
        with node.open("rb") as handle:
            handle.seek(1024)
            block = handle.read(1024)
        if len(block) < 0x154 or struct.unpack_from("<H", block, 0x38)[0] != EXT4_MAGIC:
            raise LeftAlone(f"{node} holds no ext4 filesystem")
        count: int = struct.unpack_from("<I", block, 0x04)[0]
        if struct.unpack_from("<I", block, 0x60)[0] & EXT4_INCOMPAT_64BIT:
            count |= struct.unpack_from("<I", block, 0x150)[0] << 32
        log_block_size: int = struct.unpack_from("<I", block, 0x18)[0]
        return count * (1024 << log_block_size)

    def cap(self) -> int:
        try:
            return definition_cap((self.root / VAR_DEFINITION).read_text())
        except FileNotFoundError:
            raise LeftAlone(f"the image has no /{VAR_DEFINITION}") from None

    def relocate_backup_header(self, node: Path) -> None:
        # No partition changes, so nothing to tell the kernel (which would refuse to
        # re-read the table of a disk in use anyway).
        self.run(["sfdisk", "--no-tell-kernel", "--relocate", "gpt-bak-std", str(node)])

    def grow_partition(self, node: Path) -> None:
        definitions = self.root / VAR_DEFINITION
        self.run(
            [
                "systemd-repart", "--dry-run=no", "--no-pager", "--empty=refuse",
                "--discard=no", f"--definitions={definitions.parent}", str(node),
            ]
        )  # fmt: skip

    def grow_filesystem(self, mountpoint: str) -> None:
        self.run([GROWFS, mountpoint])


def check_layout(var: Partition, table: Table) -> Entry:
    """var's table entry, if var is the disk's one var-type partition and its last."""
    mine = [e for e in table.entries if e.number == var.number]
    if not mine or mine[0].start != var.start:
        raise LeftAlone(f"the partition table of /dev/{var.disk} does not list {var.name}")
    entry = mine[0]
    if entry.type != VAR_TYPE:
        raise LeftAlone(f"{var.name} is not of the var partition type ({entry.type})")
    others = [e.number for e in table.entries if e.type == VAR_TYPE and e is not entry]
    if others:
        raise LeftAlone(f"/dev/{var.disk} has more than one var partition ({others})")
    after = [e.number for e in table.entries if e is not entry and e.end > entry.start]
    if after:
        raise LeftAlone(f"var is not the last partition of /dev/{var.disk} ({after} follow)")
    return entry


def plan(var: Partition, header: Header, disk_size: int, cap: int) -> Plan:
    """What is left to do, from the kernel's view of var and the GPT header."""
    sectors = disk_size // header.sector
    at_end = header.alternate_lba == sectors - 1
    if at_end:
        usable_end = (header.last_usable_lba + 1) * header.sector
    else:
        # Once the backup header is at the end: the header and 128 entries of 128 bytes
        # (as sfdisk and repart write them) take the disk's last sectors.
        usable_end = (sectors - 1) * header.sector - 128 * 128
    target = usable_end - var.start
    if cap:
        target = min(target, max(cap, var.size))
    return Plan(
        relocate=not at_end,
        grow_partition=target - var.size >= SLACK,
        target_size=target,
    )


def change_table(host: Host, var: Partition, disk: Path, disk_size: int, todo: Plan) -> None:
    """Move the backup header and grow var, once the table shows it is safe to."""
    entry = check_layout(var, host.table(disk))
    if todo.relocate:
        say(f"moving the backup GPT header of {disk} to the end of the disk ({gib(disk_size)})")
        host.relocate_backup_header(disk)
    if todo.grow_partition:
        say(f"growing {var.name} from {gib(entry.size)} to about {gib(todo.target_size)}")
        host.grow_partition(disk)
        grown = check_layout(var, host.table(disk))
        if grown.start != entry.start or grown.size < entry.size:
            raise LeftAlone(f"{var.name} changed unexpectedly: {entry} became {grown}")


def grow(host: Host, mountpoint: str = "/var") -> str:
    """Do what is left to do; a summary for the log. LeftAlone: nothing was done.

    With nothing left to do (every boot but the first on a bigger disk) it reads only
    sysfs, the GPT header and the ext4 superblock; the partition table is read and
    checked (check_layout) before anything is changed."""
    major, minor, fstype = host.mount_source(mountpoint)
    if fstype != "ext4":
        raise LeftAlone(f"{mountpoint} is {fstype}, not ext4")
    var = host.partition(major, minor)
    # Through dm-verity, / is a device-mapper device: its partition is the one under it.
    root = host.partition(*sysblock.underlying(*host.mount_source("/")[:2], host.sys / "dev/block"))
    if root.disk != var.disk:
        raise LeftAlone(f"{mountpoint} is on {var.disk} but / is on {root.disk}")
    disk = host.node(var.disk)
    disk_size = host.disk_size(var.disk)
    cap = host.cap()
    todo = plan(var, host.gpt_header(var.disk, disk), disk_size, cap)
    if todo.relocate or todo.grow_partition:
        change_table(host, var, disk, disk_size, todo)
    var = host.partition(major, minor)  # the kernel's view, after repart told it
    node = host.node(var.name)
    filesystem = host.filesystem_size(node)
    if var.size - filesystem >= SLACK:
        say(f"growing the filesystem on {mountpoint} from {gib(filesystem)} to {gib(var.size)}")
        host.grow_filesystem(mountpoint)
        filesystem = host.filesystem_size(node)
    capped = f", capped at {gib(cap)}" if cap else ""
    return (
        f"{mountpoint}: filesystem {gib(filesystem)}, partition {var.name} {gib(var.size)}, "
        f"disk {disk} {gib(disk_size)}{capped}"
    )


def summary(host: Host | None = None, mountpoint: str = "/var") -> dict[str, int | str]:
    """Sizes of var for `keelctl status`: its filesystem, partition and disk."""
    host = host or Host()
    fs = os.statvfs(host.root / mountpoint.lstrip("/"))
    major, minor, _ = host.mount_source(mountpoint)
    var = host.partition(major, minor)
    return {
        "filesystem": fs.f_blocks * fs.f_frsize,
        "available": fs.f_bavail * fs.f_frsize,
        "partition": var.size,
        "disk": host.disk_size(var.disk),
        "device": var.name,
    }


def main() -> int:
    started = time.monotonic()
    try:
        summary = grow(Host())
        say(f"{summary} ({time.monotonic() - started:.1f}s)")
    except LeftAlone as reason:
        say(f"left the disk as it is: {reason}")
    except Exception as error:  # a bug must not stop the boot; the journal has it
        say(f"failed: {type(error).__name__}: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
