"""The new disk's partition table: the booted disk's partitions where they are (ESP,
root-a, root-b, var: same numbers, offsets, sizes and types, fresh UUIDs), except var,
which starts small and grows to fill the new disk on its first boot (keel-grow-var,
with the image's cap, partitions.var_max).

The partitions are first written under temporary names. The host keeps running from
the disk it booted from, and the initrd, /efi and hostd find the ESP, the slots and
var by name: two disks with the same names at once would let a udev link lead to the
new one while the install is under way. The real names are written last
(writer.final_names)."""

from __future__ import annotations

from dataclasses import dataclass

from hostd.ignition.partitions import Table
from hostd.install.errors import InstallError

NAMES = ("esp", "root-a", "root-b", "var")
TEMPORARY_PREFIX = "keel-new-"
FIRST_VAR = 1024**3  # at most; more comes on the first boot
SMALLEST_VAR = 256 * 1024**2
GPT_BACKUP = 1024**2  # the backup table at the end of the disk, with room to spare


@dataclass(frozen=True)
class Planned:
    number: int
    name: str
    type: str
    start: int  # bytes
    size: int  # bytes

    @property
    def end(self) -> int:
        return self.start + self.size


def plan(table: Table, disk_size: int | None = None) -> tuple[Planned, ...]:
    """The partitions of the new disk; with disk_size, var fits the disk."""
    by_name = {slot.name: slot for slot in table.slots}
    missing = [name for name in NAMES if name not in by_name]
    if table.label != "gpt" or missing:
        raise InstallError(
            f"the disk booted from is not a Keel disk (a GPT with {', '.join(NAMES)}); "
            f"missing: {', '.join(missing) or table.label}"
        )
    planned = [
        Planned(s.number, s.name, s.type, s.start * table.sector, s.size * table.sector)
        for s in (by_name[name] for name in NAMES)
    ]
    last = max(planned, key=lambda p: p.start)
    if [p.number for p in planned] != [1, 2, 3, 4] or last.name != "var":
        raise InstallError("the disk booted from does not have Keel's layout (var last)")
    var = planned[-1]
    room = (disk_size - GPT_BACKUP - var.start) if disk_size is not None else FIRST_VAR
    size = min(var.size, FIRST_VAR, room) // 1024**2 * 1024**2
    if size < SMALLEST_VAR:
        raise InstallError(
            f"the disk is too small: var would get {size // 1024**2} MiB, "
            f"less than {SMALLEST_VAR // 1024**2} MiB"
        )
    planned[-1] = Planned(var.number, var.name, var.type, var.start, size)
    return tuple(planned)


def needed_size(table: Table) -> int:
    """The smallest disk that takes the layout with the smallest var."""
    var = next((s for s in table.slots if s.name == "var"), None)
    if var is None:
        raise InstallError("the disk booted from has no var partition")
    return var.start * table.sector + SMALLEST_VAR + GPT_BACKUP


def sfdisk_script(planned: tuple[Planned, ...], sector: int) -> str:
    """A GPT with the partitions under their temporary names; sfdisk makes a new disk
    GUID and new partition UUIDs, so the two disks share no identifier."""
    lines = ["label: gpt"]
    for part in planned:
        if part.start % sector or part.size % sector:
            raise InstallError(
                f"partition {part.name} is not aligned to the new disk's {sector}-byte sectors"
            )
        lines.append(
            f"start={part.start // sector}, size={part.size // sector}, "
            f"type={part.type}, name={TEMPORARY_PREFIX}{part.name}"
        )
    return "\n".join(lines) + "\n"
