"""storage.disks and storage.filesystems on this machine: check everything, then
partition and format. The first-boot story for an extra disk:

1. check_storage(), before anything at all is written: the tools are in the image;
   every device exists (udev is waited for) and is a block device; none is on the
   disk the OS runs from; each disk's partitions are planned to the sector from its
   current table (partitions.py) and each filesystem device is either there or a
   partition the plan makes; what each device holds now is probed (blkid, also on the
   region a partition will have), so "reuse", "make" or "refuse" is decided up front,
   as Ignition decides it (an existing filesystem of the same format, label and UUID is
   reused; another one is refused unless wipeFilesystem); a device that would change
   must not be in use (mounted, swap, held).
2. apply_storage(): wipefs and sfdisk per disk, udevadm settle (so /dev/disk/by-* links
   exist), then wipefs and mkfs per filesystem, udevadm settle again.

A tool that fails in step 2 raises ApplyError, which provision.py records like any
failed config. The mount units (Butane's with_mount_unit) are ordinary systemd.units
entries, written and enabled by units.py and started by provision.py."""

from __future__ import annotations

from dataclasses import dataclass

from hostd.ignition.blockdev import Device, Found, Machine, NotABlockDevice, ToolError
from hostd.ignition.config import Config
from hostd.ignition.disks import Disk, Filesystem
from hostd.ignition.errors import ApplyError
from hostd.ignition.partitions import DiskPlan, PlanError, partition_name, plan_disk, sfdisk_script
from hostd.ignition.safefs import Root, UnsafePath
from hostd.ignition.tree import Tree

# format -> (mkfs tool, the Debian package that has it)
MKFS = {
    "ext4": ("mkfs.ext4", "e2fsprogs"),
    "xfs": ("mkfs.xfs", "xfsprogs"),
    "vfat": ("mkfs.vfat", "dosfstools"),
    "btrfs": ("mkfs.btrfs", "btrfs-progs"),
    "swap": ("mkswap", "util-linux"),
}
TOOL_PACKAGES = {"sfdisk": "fdisk", "wipefs": "util-linux", "blkid": "util-linux",
                 "udevadm": "udev"}  # fmt: skip
TOOL_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


@dataclass(frozen=True)
class Format:
    """One filesystem entry, decided: reuse what is there, or wipe it (and make one)."""

    fs: Filesystem
    field: str
    node: str  # the device to format (a partition may not exist yet)
    found: Found
    make: bool  # False: reuse what is there

    def describe(self) -> str:
        what = f"{self.fs.format} on {self.fs.device}"
        if self.fs.label:
            what += f" (label {self.fs.label})"
        return what


@dataclass(frozen=True)
class StoragePlan:
    disks: tuple[DiskPlan, ...] = ()
    formats: tuple[Format, ...] = ()


@dataclass(frozen=True)
class _Partition:
    """A partition a disk plan leaves behind, as a filesystem entry may name it."""

    disk: Device
    plan: DiskPlan
    number: int


def mkfs_argv(fs: Filesystem, node: str) -> list[str]:
    """The mkfs command Ignition runs for fs: the config's options, then the force flag,
    UUID and label (Ignition's order), then the device."""
    assert fs.format in MKFS
    args = [MKFS[fs.format][0], *fs.options]
    uuid = (fs.uuid or "").lower()
    if fs.format == "vfat":
        uuid = uuid.replace("-", "")  # mkfs.fat takes the volume id without its dash
    flags = {  # force, uuid option, label option
        "ext4": ("-F", ["-U", uuid], ["-L"]),
        "btrfs": ("--force", ["-U", uuid], ["-L"]),
        "xfs": ("-f", ["-m", f"uuid={uuid}"], ["-L"]),
        "swap": ("-f", ["-U", uuid], ["-L"]),
        "vfat": ("", ["-i", uuid], ["-n"]),
    }[fs.format]
    if flags[0]:
        args.append(flags[0])
    if fs.uuid:
        args += flags[1]
    if fs.label is not None:
        args += [*flags[2], fs.label]
    return [*args, "--", node]


def _tool_problem(fs: Root, tool: str, package: str, why: str) -> str | None:
    for folder in TOOL_DIRS:
        try:
            if fs.lstat(f"{folder}/{tool}") is not None:
                return None
        except (UnsafePath, NotADirectoryError):
            continue
    return (
        f"{why} needs {tool}, which this image lacks: add the Debian package {package} "
        "to the image definition's packages"
    )


def _predicted(disk: Disk, device: Device, plan: DiskPlan) -> dict[str, int]:
    """The paths that will name each partition of the plan: the kernel's node, the
    disk path as given with the number (or -partN for by-id and by-path links), and
    udev's by-partlabel and by-partuuid links."""
    names: dict[str, int] = {}
    for number, slot in plan.layout.items():
        names[partition_name(device.node, number)] = number
        names[partition_name(disk.device, number)] = number
        names[f"{disk.device}-part{number}"] = number
        if slot.name:
            names[f"/dev/disk/by-partlabel/{slot.name}"] = number
        if slot.uuid:
            names[f"/dev/disk/by-partuuid/{slot.uuid.lower()}"] = number
    return names


class _Checker:
    def __init__(self, machine: Machine, fs: Root, config: Config) -> None:
        self.machine = machine
        self.fs = fs
        self.config = config
        self.problems: list[str] = []
        self.os_disks = machine.os_disks()
        self.partitions: dict[str, _Partition] = {}
        self.disks: dict[str, tuple[Disk, Device, DiskPlan]] = {}  # by kernel name

    def device(self, path: str, field: str) -> Device | None:
        """The device at path, or None with the problem noted (missing, not a block
        device, on the OS disk)."""
        try:
            device = self.machine.device(path)
        except NotABlockDevice as error:
            self.problems.append(f"field '{field}': {error}")
            return None
        if device is None:
            self.problems.append(
                f"field '{field}': {path} does not exist (a partition storage.disks makes "
                "is named by its disk and number, /dev/disk/by-partlabel/LABEL or "
                "/dev/disk/by-partuuid/GUID)"
            )
            return None
        if device.disk in self.os_disks:
            self.problems.append(
                f"field '{field}': {path} is on /dev/{device.disk}, the disk the OS runs "
                f"from ({self.os_disks[device.disk]} is on it); Keel's own disk layout is "
                "fixed by the image: name another disk"
            )
            return None
        return device

    def in_use(self, device: Device, field: str, what: str) -> None:
        for use in self.machine.users(device):
            self.problems.append(f"field '{field}': cannot {what}: {use}")

    def disk(self, index: int, disk: Disk) -> None:
        field = f"storage.disks[{index}]"
        device = self.device(disk.device, f"{field}.device")
        if device is None:
            return
        if device.number is not None:
            self.problems.append(
                f"field '{field}.device': {disk.device} is partition {device.number} of "
                f"/dev/{device.disk}; storage.disks names whole disks"
            )
            return
        current = self.machine.table(device.node)
        if current is None and disk.partitions and not disk.wipe_table:
            found = self.machine.probe(device.node)
            if found.type:
                self.problems.append(
                    f"field '{field}': {disk.device} holds {found.type} on the whole disk; "
                    "set wipeTable: true to partition it (that filesystem is lost)"
                )
                return
        sector, sectors = self.machine.geometry(device)
        try:
            plan = plan_disk(disk, current, sector, sectors, field, device.node)
        except PlanError as error:
            self.problems.append(str(error))
            return
        if plan.changes:
            self.in_use(device, f"{field}.device", f"change the partitions of {disk.device}")
        self.disks[device.name] = (disk, device, plan)
        for name, number in _predicted(disk, device, plan).items():
            self.partitions[name] = _Partition(device, plan, number)

    def filesystem(self, index: int, entry: Filesystem) -> Format | None:
        field = f"storage.filesystems[{index}]"
        if entry.format is None:
            return None
        partition = self.partitions.get(entry.device)
        if partition is not None:
            plan, slot = partition.plan, partition.plan.layout[partition.number]
            node = partition_name(partition.disk.node, partition.number)
            # What the region holds now is what the partition will hold.
            found = self.machine.probe(
                partition.disk.node, slot.start * plan.sector, slot.size * plan.sector
            )
            if partition.number not in plan.fresh:  # else the disk's own check covered it
                kept = Device(node, node.rsplit("/", 1)[-1], partition.disk.name, partition.number)
                self.in_use_if_made(entry, found, kept, field, node)
        else:
            device = self.device(entry.device, f"{field}.device")
            if device is None:
                return None
            node = device.node
            planned = self.disks.get(device.disk)
            if planned is not None and planned[2].changes:
                if device.number is None and planned[2].wipe and not planned[2].table:
                    found = Found()  # wipeTable with no partitions: a blank disk
                else:
                    self.problems.append(
                        f"field '{field}.device': {entry.device} is on a disk that "
                        f"{planned[0].device} repartitions; name the partition by "
                        "by-partlabel, by-partuuid or number so it is known after that"
                    )
                    return None
            else:
                found = self.machine.probe(node)
                self.in_use_if_made(entry, found, device, field, node)
        make = self.decide(entry, found, field)
        if make is None:
            return None
        if make and entry.format in MKFS:
            tool, package = MKFS[entry.format]
            problem = _tool_problem(
                self.fs, tool, package, f"field '{field}.format': {entry.format}"
            )
            if problem:
                self.problems.append(problem)
        return Format(entry, field, node, found, make)

    def in_use_if_made(
        self, entry: Filesystem, found: Found, device: Device, field: str, node: str
    ) -> None:
        if self.decide(entry, found, field, quiet=True):
            self.in_use(device, f"{field}.device", f"format {node}")

    def decide(self, entry: Filesystem, found: Found, field: str, quiet: bool = False
               ) -> bool | None:  # fmt: skip
        """True: wipe (and make the filesystem), False: reuse what is there, None:
        refused (noted unless quiet). Ignition's rules, plus a partition table counts as
        something there."""
        if entry.wipe:
            return True
        wanted = "" if entry.format == "none" else entry.format
        uuid_ok = entry.uuid is None or _same_uuid(entry.format, entry.uuid, found.uuid)
        if (
            found.type == wanted
            and (entry.label is None or entry.label == found.label)
            and (uuid_ok)
        ):
            return False
        there = found.type or (f"a {found.table} partition table" if found.table else "")
        if not there:
            return True
        if not quiet:
            shown = there
            if found.type:
                shown += f" (label {found.label!r}, UUID {found.uuid})"
            self.problems.append(
                f"field '{field}': {entry.device} holds {shown}, not {_wanted(entry)}; set "
                "wipeFilesystem: true to replace it (what it holds is lost)"
            )
        return None


def _same_uuid(fs_format: str | None, given: str, found: str | None) -> bool:
    def canonical(value: str) -> str:
        value = value.lower()
        return value.replace("-", "") if fs_format == "vfat" else value

    return found is not None and canonical(given) == canonical(found)


def _wanted(entry: Filesystem) -> str:
    if entry.format == "none":
        return "nothing (format none)"
    parts = [f"{entry.format}"]
    if entry.label is not None:
        parts.append(f"label {entry.label!r}")
    if entry.uuid is not None:
        parts.append(f"UUID {entry.uuid}")
    return " with ".join(parts)


def check_storage(machine: Machine, fs: Root, config: Config) -> tuple[StoragePlan, list[str]]:
    """The plan for config's disks and filesystems on this machine, and every reason it
    cannot be applied (then nothing must be)."""
    if not config.disks and not config.filesystems:
        return StoragePlan(), []
    tools = ["udevadm", "blkid"] + (["sfdisk"] if config.disks else [])
    problems = [
        p for t in tools if (p := _tool_problem(fs, t, TOOL_PACKAGES[t], "storage")) is not None
    ]
    if problems:
        return StoragePlan(), problems
    paths = [d.device for d in config.disks] + [f.device for f in config.filesystems]
    try:
        # Links udev makes (by-id, by-partlabel) may come late this early in the boot;
        # the config's own partitions appear only later, so a miss is not an error here.
        machine.wait_for([d.device for d in config.disks])
        checker = _Checker(machine, fs, config)
        if not checker.os_disks:
            return StoragePlan(), [
                "storage: cannot tell which disk the OS runs from (no block device behind "
                "/, /usr or /var in /proc/self/mountinfo); refusing to partition or format"
            ]
        for index, disk in enumerate(config.disks):
            checker.disk(index, disk)
        waiting = [p for p in paths if p not in checker.partitions]
        machine.wait_for(waiting)
        formats = [
            f
            for index, entry in enumerate(config.filesystems)
            if (f := checker.filesystem(index, entry)) is not None
        ]
    except (ToolError, OSError, ValueError) as error:
        return StoragePlan(), [f"storage: {error}"]
    plans = tuple(plan for _disk, _device, plan in checker.disks.values())
    needs_wipefs = any(p.wipe for p in plans) or any(f.make for f in formats)
    if needs_wipefs and (problem := _tool_problem(fs, "wipefs", "util-linux", "storage")):
        checker.problems.append(problem)
    return StoragePlan(plans, tuple(formats)), checker.problems


def apply_storage(machine: Machine, plan: StoragePlan, tree: Tree) -> None:
    """Partition, then format, as checked; ApplyError if a tool fails."""
    step = ""
    try:
        changed = [p for p in plan.disks if p.changes]
        for disk in changed:
            step = f"partitioning {disk.node}"
            if disk.wipe:
                machine.run(["wipefs", "--all", "--", disk.node])
            if disk.table is not None:
                machine.run(
                    ["sfdisk", "--quiet", "--", disk.node], sfdisk_script(disk.table, disk.node)
                )
        for disk in plan.disks:
            for note in disk.notes:
                tree.note(note)
        if changed:
            step = "waiting for udev after partitioning"
            machine.settle()
            fresh = [partition_name(d.node, n) for d in changed for n in sorted(d.fresh)]
            if missing := machine.wait_for(fresh):
                raise ToolError(f"{', '.join(missing)} did not appear after partitioning")
        made = False
        for entry in plan.formats:
            if not entry.make:
                tree.note(f"unchanged: {entry.describe()} (reused)")
                continue
            step = f"formatting {entry.node} ({entry.field})"
            machine.run(["wipefs", "--all", "--", entry.node])
            if entry.fs.format == "none":
                tree.note(f"wiped {entry.fs.device} (format none)")
                continue
            machine.run(mkfs_argv(entry.fs, entry.node))
            tree.note(f"made {entry.describe()}" + (" (wiped first)" if entry.found.type else ""))
            made = True
        if made:
            step = "waiting for udev after formatting"
            machine.settle()
    except ToolError as error:
        raise ApplyError(f"{step}: {error}") from None
