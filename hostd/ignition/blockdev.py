"""This machine's block devices as first boot sees them, and the one place that runs
the storage tools (sfdisk, wipefs, mkfs.*, blkid, udevadm).

What a device path is (a whole disk or a partition, of which disk) comes from sysfs
(/sys/dev/block/MAJOR:MINOR); which disk the OS runs from comes from the devices
mounted on /, /usr, /var, /efi and /boot (/proc/self/mountinfo), through device-mapper
and other stacked devices (/sys/class/block/NAME/slaves) down to the disk. A test
replaces Machine's methods to stand in for disks (see tests/unit/hostd/ignition)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hostd.ignition.partitions import Slot, Table

# Mount points that make a disk the OS's: the root slot, var, the ESP.
OS_MOUNTS = ("/", "/usr", "/var", "/efi", "/boot", "/boot/efi")
SETTLE_SECONDS = 60  # udev events of a new partition table or filesystem
DEVICE_WAIT_SECONDS = 30.0  # a device link udev has not made yet
TOOL_SECONDS = 600  # mkfs of a large disk takes a while; a hung tool must not stall boot
NO_TABLE = "does not contain a recognized partition table"
BLKID_NOTHING = 2  # blkid's exit status when it found no signature
BLKID_AMBIVALENT = 8  # several signatures (wipefs lists them)


class ToolError(Exception):
    """A storage tool failed; the message names the command and what it printed."""


class NotABlockDevice(ValueError):
    pass


@dataclass(frozen=True)
class Device:
    node: str  # the device node the path leads to: /dev/vdb, /dev/vdb1
    name: str  # the kernel's name: vdb, vdb1
    disk: str  # the kernel's name of the whole disk: vdb
    number: int | None = None  # the partition number, None for a whole disk


@dataclass(frozen=True)
class Found:
    """What blkid found on a device (or a region of one): type "" is nothing."""

    type: str = ""
    label: str | None = None
    uuid: str | None = None
    table: str = ""  # a partition table's type (gpt, dos), if one is there


def _unescape(value: str) -> str:
    """blkid -o export escapes with backslashes (LABEL=my\\ disk)."""
    out, escaped = [], False
    for char in value:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


class Machine:
    def __init__(self, sys: Path = Path("/sys"), proc: Path = Path("/proc")) -> None:
        self.sys = sys
        self.proc = proc

    # -- running tools -------------------------------------------------------------

    def run(self, argv: list[str], stdin: str | None = None) -> str:
        """Run a tool and return what it printed; ToolError naming the command and its
        messages if it fails."""
        return self.run_status(argv, stdin)[1]

    def run_status(
        self, argv: list[str], stdin: str | None = None, ok: tuple[int, ...] = (0,)
    ) -> tuple[int, str]:
        """(exit status, output) of a tool; ToolError if the status is not in ok."""
        shown = " ".join(argv)
        try:
            result = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=TOOL_SECONDS,
            )
        except FileNotFoundError:
            raise ToolError(f"`{shown}`: {argv[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise ToolError(f"`{shown}` did not finish within {TOOL_SECONDS}s") from None
        if result.returncode not in ok:
            message = (result.stderr or result.stdout).strip().replace("\n", "; ")
            raise ToolError(f"`{shown}` failed (exit status {result.returncode}): {message}")
        return result.returncode, result.stdout

    def settle(self) -> None:
        """Wait until udev handled every event (so /dev/disk/by-* links exist)."""
        self.run(["udevadm", "settle", f"--timeout={SETTLE_SECONDS}"])

    def wait_for(self, paths: list[str]) -> list[str]:
        """The paths still missing after udev settled and a short wait (udev may not
        have seen a disk yet this early in the boot)."""
        missing = [p for p in paths if not os.path.exists(p)]
        if not missing:
            return []
        self.settle()
        deadline = time.monotonic() + DEVICE_WAIT_SECONDS
        while missing and time.monotonic() < deadline:
            time.sleep(0.5)
            missing = [p for p in missing if not os.path.exists(p)]
        return missing

    # -- what a path is ---------------------------------------------------------------

    def _sysfs(self, rdev: int) -> Path:
        return (self.sys / "dev/block" / f"{os.major(rdev)}:{os.minor(rdev)}").resolve()

    def device(self, path: str) -> Device | None:
        """The block device path leads to (links followed); None if there is none."""
        node = os.path.realpath(path)
        try:
            info = os.stat(node)
        except FileNotFoundError:
            return None
        if not stat.S_ISBLK(info.st_mode):
            raise NotABlockDevice(f"{path} is not a block device")
        entry = self._sysfs(info.st_rdev)
        if (entry / "partition").is_file():
            number = int((entry / "partition").read_text().strip())
            return Device(node, entry.name, entry.parent.name, number)
        return Device(node, entry.name, entry.name)

    def _disks_below(self, entry: Path, depth: int = 0) -> set[str]:
        """The whole disks a sysfs block entry stands on (through dm, md, loop...)."""
        if (entry / "partition").is_file():
            entry = entry.parent
        slaves = sorted((entry / "slaves").glob("*")) if depth < 8 else []
        if not slaves:
            return {entry.name}
        found: set[str] = set()
        for slave in slaves:
            found |= self._disks_below(slave.resolve(), depth + 1)
        return found

    def _mounts(self) -> list[tuple[int, int, str]]:
        """(major, minor, mount point) of /proc/self/mountinfo."""
        mounts = []
        for line in (self.proc / "self/mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) > 4 and ":" in fields[2]:
                major, minor = fields[2].split(":", 1)
                # Octal escapes (\040 for a space) as the kernel writes them.
                where = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
                mounts.append((int(major), int(minor), where))
        return mounts

    def os_disks(self) -> dict[str, str]:
        """Disk name -> the OS mount point it holds (vda -> /)."""
        disks: dict[str, str] = {}
        for major, minor, where in self._mounts():
            if where not in OS_MOUNTS or major == 0:
                continue
            entry = (self.sys / "dev/block" / f"{major}:{minor}").resolve()
            for disk in self._disks_below(entry):
                disks.setdefault(disk, where)
        return disks

    def users(self, device: Device) -> list[str]:
        """What uses the device, or for a whole disk any of its partitions: mounts,
        swap, holders (device-mapper, RAID). Empty when nothing does."""
        names = [device.name]
        if device.number is None:
            disk = self.sys / "class/block" / device.name
            names += sorted(
                p.name for p in disk.glob(f"{device.name}*") if (p / "partition").exists()
            )
        found = []
        mounts = self._mounts()
        for name in names:
            entry = self.sys / "class/block" / name
            try:
                major, minor = (int(n) for n in (entry / "dev").read_text().strip().split(":"))
            except (OSError, ValueError):
                continue
            found += [
                f"/dev/{name} is mounted at {w}" for a, b, w in mounts if (a, b) == (major, minor)
            ]
            found += [
                f"/dev/{name} is held by {h.name}" for h in sorted((entry / "holders").glob("*"))
            ]
        swaps = (
            (self.proc / "swaps").read_text().splitlines()[1:]
            if (self.proc / "swaps").exists()
            else []
        )
        for line in swaps:
            node = os.path.realpath(line.split()[0]) if line.split() else ""
            if os.path.basename(node) in names:
                found.append(f"{node} is in use as swap")
        return found

    def geometry(self, device: Device) -> tuple[int, int]:
        """(logical sector size in bytes, size in those sectors)."""
        sector = int(
            (self.sys / "class/block" / device.disk / "queue/logical_block_size").read_text()
        )
        size_512 = int((self.sys / "class/block" / device.name / "size").read_text())
        return sector, size_512 * 512 // sector

    # -- reading with the tools ------------------------------------------------------

    def table(self, node: str) -> Table | None:
        """The partition table on node (sfdisk --json), None if it has none."""
        try:
            text = self.run(["sfdisk", "--json", "--", node])
        except ToolError as error:
            if NO_TABLE in str(error):
                return None
            raise
        data = json.loads(text)["partitiontable"]
        slots = []
        for part in data.get("partitions", []):
            digits = part["node"][len(part["node"].rstrip("0123456789")) :]
            slots.append(
                Slot(
                    number=int(digits),
                    start=int(part["start"]),
                    size=int(part["size"]),
                    type=str(part.get("type", "")),
                    uuid=str(part.get("uuid", "")),
                    name=str(part.get("name", "")),
                    attrs=str(part.get("attrs", "")),
                )
            )
        return Table(
            label=str(data.get("label", "")),
            id=str(data.get("id", "")),
            first=int(data.get("firstlba", 0)),
            last=int(data.get("lastlba", 0)),
            sector=int(data.get("sectorsize", 512)),
            slots=tuple(slots),
        )

    def probe(self, node: str, offset: int | None = None, size: int | None = None) -> Found:
        """What blkid finds on node, or on the bytes [offset, offset + size) of it (a
        partition not made yet)."""
        region = [] if offset is None else ["-O", str(offset), "-S", str(size)]
        status, text = self.run_status(
            ["blkid", "-p", "-o", "export", *region, "--", node],
            ok=(0, BLKID_NOTHING, BLKID_AMBIVALENT),
        )
        if status == BLKID_AMBIVALENT:
            return Found(type="(several signatures; wipefs -n lists them)")
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, equals, value = line.partition("=")
            if equals:
                values[key] = _unescape(value)
        return Found(
            type=values.get("TYPE", ""),
            label=values.get("LABEL"),
            uuid=values.get("UUID"),
            table=values.get("PTTYPE", ""),
        )
