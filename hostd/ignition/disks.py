"""storage.disks (with their partitions) and storage.filesystems: extra data disks,
for example a second disk formatted ext4 for /var/lib/docker.

Parsed and checked here as far as the config alone allows, with Ignition's rules
(spec 3.0.0 to 3.5.0) and Keel's own: devices are /dev paths, partition labels are not
the OS disk's, a filesystem is mounted below /var or /etc and never over Keel's state.
What depends on the machine (which disk the OS runs from, what a device holds now, the
tools in the image) is checked by storage.py, still before anything is written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hostd.ignition.paths import clean

# Ignition's formats; "none" (3.3.0+) asks for no filesystem at all.
FORMATS = ("ext4", "btrfs", "xfs", "vfat", "swap", "none")
NONE_SINCE = (3, 3, 0)
# Longest label each format takes (Ignition's limits, from the mkfs manuals).
LABEL_MAX = {"ext4": 16, "btrfs": 256, "xfs": 12, "swap": 15, "vfat": 11}
PARTITION_LABEL_MAX = 36  # UTF-16 code units in a GPT entry
MAX_PARTITION_NUMBER = 128  # entries in a GPT as sfdisk and sgdisk write it
MAX_OPTIONS = 64
# The OS disk's partition labels (composer/build/partitions.py): the initramfs mounts
# /dev/disk/by-partlabel/var, and the loader entries boot PARTLABEL=root-a/root-b. A
# second disk with one of them would make the next boot pick either.
OS_PARTITION_LABELS = frozenset({"esp", "root-a", "root-b", "var"})
# Where a filesystem may be mounted: below /var or /etc, as Fedora CoreOS's Butane
# allows (the OS is read-only, and /home, /root, /opt, /usr/local are links into /var).
MOUNT_PLACES = ("/var/", "/etc/")
# Keel's own state (the provisioning record, the /etc overlay's upper layer): a mount
# on, below or above it would hide it on the next boot.
KEEL_STATE = "/var/lib/keel"
_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_VFAT_ID = re.compile(r"[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}")


@dataclass(frozen=True)
class Partition:
    number: int = 0  # 0: the next free number (or, without wipeTable, the one labelled so)
    label: str | None = None
    size_mib: int | None = None  # 0: to the end of the free space it starts in
    start_mib: int | None = None  # 0: the start of the largest free space
    type_guid: str | None = None
    guid: str | None = None
    wipe_entry: bool = False  # wipePartitionEntry
    should_exist: bool = True
    resize: bool = False


@dataclass(frozen=True)
class Disk:
    device: str
    wipe_table: bool = False
    partitions: tuple[Partition, ...] = ()


@dataclass(frozen=True)
class Filesystem:
    device: str
    format: str | None = None  # None: nothing to make (the entry only names a device)
    path: str | None = None
    wipe: bool = False  # wipeFilesystem
    label: str | None = None
    uuid: str | None = None
    options: tuple[str, ...] = ()
    mount_options: tuple[str, ...] = ()

    @property
    def mount_point(self) -> str | None:
        """Where it is mounted (swap and "none" are not mounted anywhere)."""
        return self.path if self.format not in (None, "swap", "none") else None


def _control(text: str) -> bool:
    return any(ord(c) < 0x20 or c == "\x7f" for c in text)


def device_problem(raw: str, field: str) -> str | None:
    """Why raw cannot name a block device (None if it can): an absolute, clean path
    below /dev, as Ignition requires (clean) and Keel (only /dev holds devices)."""
    if not raw:
        return f"field '{field}' is required"
    if _control(raw) or len(raw.encode()) >= 4096:
        return f"field '{field}' must be a /dev path without control characters"
    if not raw.startswith("/dev/") or raw == "/dev/":
        return f"field '{field}' is {raw!r}; a device is a path below /dev, such as /dev/vdb"
    if clean(raw) != raw or "/../" in raw + "/":
        return f"field '{field}' is {raw!r}, not a clean path; write {clean(raw)!r}"
    return None


def _guid(value: str | None, field: str, problems: list[str]) -> str | None:
    if value and not _GUID.fullmatch(value):
        problems.append(
            f"field '{field}' is {value[:60]!r}, not a GUID such as "
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        )
    return value or None  # "" means the same as not given


def _partition(entry: dict[str, Any], field: str, problems: list[str]) -> Partition:
    number = entry.get("number") or 0
    if not 0 <= number <= MAX_PARTITION_NUMBER:
        problems.append(f"field '{field}.number' is {number}; 1 to {MAX_PARTITION_NUMBER}, or 0")
    for key in ("sizeMiB", "startMiB"):
        value = entry.get(key)
        if value is not None and not 0 <= value < 2**40:
            problems.append(f"field '{field}.{key}' is {value}; a size in MiB, 0 or more")
    label = entry.get("label")
    if label is not None:
        if len(label.encode("utf-16-le")) // 2 > PARTITION_LABEL_MAX:
            problems.append(
                f"field '{field}.label' is longer than {PARTITION_LABEL_MAX} characters"
            )
        if ":" in label or '"' in label or "\\" in label or _control(label):
            problems.append(
                f"field '{field}.label' {label[:40]!r} must not hold ':', '\"', '\\' or "
                "control characters"
            )
        if label in OS_PARTITION_LABELS:
            problems.append(
                f"field '{field}.label' is {label!r}, a label of the OS disk's partitions "
                f"({', '.join(sorted(OS_PARTITION_LABELS))}); the next boot could take the "
                "new partition for the OS's; choose another label"
            )
    partition = Partition(
        number=number,
        label=label,
        size_mib=entry.get("sizeMiB"),
        start_mib=entry.get("startMiB"),
        type_guid=_guid(entry.get("typeGuid"), f"{field}.typeGuid", problems),
        guid=_guid(entry.get("guid"), f"{field}.guid", problems),
        wipe_entry=bool(entry.get("wipePartitionEntry")),
        should_exist=entry.get("shouldExist") is not False,
        resize=bool(entry.get("resize")),
    )
    if not partition.should_exist and (
        label is not None
        or partition.type_guid
        or partition.guid
        or partition.start_mib is not None
        or partition.size_mib is not None
    ):
        problems.append(f"field '{field}': shouldExist false takes no label, GUIDs, start or size")
    if number == 0 and label is None:
        problems.append(f"field '{field}' needs a number (1 or more) or a label")
    return partition


def _overlap(partitions: tuple[Partition, ...]) -> tuple[int, int] | None:
    """Two partitions whose given start and size overlap (as Ignition checks)."""
    placed = [
        (i, p.start_mib, p.start_mib + max(p.size_mib, 1) - 1)
        for i, p in enumerate(partitions)
        if p.start_mib and p.size_mib is not None
    ]
    for i, start, end in placed:
        for j, other_start, other_end in placed:
            if i < j and start <= other_end and other_start <= end:
                return i, j
    return None


def _disk(entry: dict[str, Any], field: str, problems: list[str]) -> Disk | None:
    device = entry.get("device") or ""
    problem = device_problem(device, f"{field}.device")
    partitions = tuple(
        _partition(item, f"{field}.partitions[{i}]", problems)
        for i, item in enumerate(entry.get("partitions") or [])
    )
    numbers = [p.number for p in partitions if p.number]
    labels = [p.label for p in partitions if p.label is not None]
    for i, p in enumerate(partitions):
        if p.number and numbers.count(p.number) > 1:
            problems.append(f"field '{field}.partitions[{i}].number': {p.number} is given twice")
        if p.label is not None and labels.count(p.label) > 1:
            problems.append(f"field '{field}.partitions[{i}].label': {p.label!r} is given twice")
    if any(not p.should_exist for p in partitions) and any(p.number == 0 for p in partitions):
        problems.append(
            f"field '{field}.partitions': number 0 is not allowed on a disk where a "
            "partition has shouldExist false (which number would be free is unclear)"
        )
    if (pair := _overlap(partitions)) is not None:
        problems.append(
            f"field '{field}.partitions[{pair[1]}]' overlaps partitions[{pair[0]}] "
            "(startMiB and sizeMiB)"
        )
    if problem:
        problems.append(problem)
        return None
    return Disk(device, bool(entry.get("wipeTable")), partitions)


def _mount_path(raw: str, field: str, problems: list[str]) -> str:
    if _control(raw) or not raw.startswith("/") or clean(raw) != raw or "/../" in raw + "/":
        problems.append(f"field '{field}' is {raw[:80]!r}; an absolute, clean path")
    elif not raw.startswith(MOUNT_PLACES):
        problems.append(
            f"field '{field}' is {raw!r}; a filesystem is mounted below /var or /etc (the "
            "OS is read-only; /home, /root, /opt and /usr/local live in /var: use "
            "/var/home, /var/roothome, /var/opt or /var/usrlocal)"
        )
    elif (raw + "/").startswith(KEEL_STATE + "/") or (KEEL_STATE + "/").startswith(raw + "/"):
        problems.append(
            f"field '{field}' is {raw!r}; a mount there would hide Keel's own state in "
            f"{KEEL_STATE} (the provisioning record, the /etc overlay) on the next boot"
        )
    return raw


def _uuid(fs_format: str | None, value: str, field: str, problems: list[str]) -> None:
    pattern = _VFAT_ID if fs_format == "vfat" else _GUID
    if not pattern.fullmatch(value):
        shape = "a volume id such as 1A2B-3C4D" if fs_format == "vfat" else "a UUID"
        problems.append(f"field '{field}' is {value[:60]!r}, not {shape}")


def _words(values: list[str], field: str, problems: list[str]) -> tuple[str, ...]:
    if len(values) > MAX_OPTIONS:
        problems.append(f"field '{field}' has {len(values)} items; at most {MAX_OPTIONS}")
    for i, value in enumerate(values):
        if _control(value) or len(value) > 4096:
            problems.append(f"field '{field}[{i}]' must be one line of text")
    return tuple(values)


def _filesystem(
    entry: dict[str, Any], field: str, version: tuple[int, ...], problems: list[str]
) -> Filesystem | None:
    device = entry.get("device") or ""
    problem = device_problem(device, f"{field}.device")
    fs_format = entry.get("format") or None
    label = entry.get("label") or None
    uuid = entry.get("uuid") or None
    path = entry.get("path") or None
    options = _words(entry.get("options") or [], f"{field}.options", problems)
    for i, option in enumerate(options):
        # mkfs takes the first word that is not an option as the device to format.
        if option.startswith("/dev"):
            problems.append(
                f"field '{field}.options[{i}]' is {option[:60]!r}; options must not name "
                "a device (mkfs could take it for the one to format)"
            )
    mount_options = _words(entry.get("mountOptions") or [], f"{field}.mountOptions", problems)
    if fs_format is None:
        if path or label or uuid or entry.get("wipeFilesystem") or options or mount_options:
            problems.append(
                f"field '{field}.format' is required when path, label, uuid, "
                "wipeFilesystem, options or mountOptions is given"
            )
    elif fs_format not in FORMATS:
        problems.append(
            f"field '{field}.format' is {fs_format[:40]!r}; one of {', '.join(FORMATS)}"
        )
    elif fs_format == "none" and version < NONE_SINCE:
        problems.append(f"field '{field}.format' none needs ignition.version 3.3.0 or later")
    if (
        label is not None
        and fs_format in LABEL_MAX
        and (len(label.encode()) > LABEL_MAX[fs_format] or _control(label))
    ):
        problems.append(
            f"field '{field}.label' is too long for {fs_format} (at most "
            f"{LABEL_MAX[fs_format]} bytes, one line)"
        )
    if uuid is not None and fs_format in LABEL_MAX:
        _uuid(fs_format, uuid, f"{field}.uuid", problems)
    if path is not None and fs_format not in ("swap", "none"):
        path = _mount_path(path, f"{field}.path", problems)
    if problem:
        problems.append(problem)
        return None
    return Filesystem(
        device=device,
        format=fs_format,
        path=path,
        wipe=bool(entry.get("wipeFilesystem")),
        label=label,
        uuid=uuid,
        options=options,
        mount_options=mount_options,
    )


def parse_storage_devices(
    storage: dict[str, Any], version: str, problems: list[str]
) -> tuple[tuple[Disk, ...], tuple[Filesystem, ...]]:
    """storage.disks and storage.filesystems, every problem appended to problems."""
    numeric = tuple(int(part) for part in version.split("."))
    disks: list[Disk] = []
    for index, entry in enumerate(storage.get("disks") or []):
        field = f"storage.disks[{index}]"
        disk = _disk(entry, field, problems)
        if disk is None:
            continue
        if any(d.device == disk.device for d in disks):
            problems.append(f"field '{field}.device': {disk.device} is given twice")
        disks.append(disk)
    filesystems: list[Filesystem] = []
    for index, entry in enumerate(storage.get("filesystems") or []):
        field = f"storage.filesystems[{index}]"
        fs = _filesystem(entry, field, numeric, problems)
        if fs is None:
            continue
        if any(f.device == fs.device for f in filesystems):
            problems.append(f"field '{field}.device': {fs.device} is given twice")
        mount = fs.mount_point
        if mount is not None and any(f.mount_point == mount for f in filesystems):
            problems.append(f"field '{field}.path': {mount} is mounted twice")
        if any(d.device == fs.device and d.partitions for d in disks):
            problems.append(
                f"field '{field}.device': {fs.device} is a whole disk that storage.disks "
                "partitions; a filesystem there would destroy the partitions (name one of "
                "them, for example /dev/disk/by-partlabel/LABEL)"
            )
        if fs.device.startswith("/dev/disk/by-partlabel/") and (
            fs.device.rsplit("/", 1)[1] in OS_PARTITION_LABELS
        ):
            problems.append(
                f"field '{field}.device' is {fs.device}, a partition of the OS disk; Keel's "
                "disk layout is fixed by the image"
            )
        filesystems.append(fs)
    return tuple(disks), tuple(filesystems)
