"""Partition planning for storage.disks: pure arithmetic on the table sfdisk reports,
no I/O, so every decision is made (and every refusal found) before a disk is written.

Ignition's partition-reuse rules (its operator notes), with sfdisk instead of sgdisk:
- a partition that exists and matches (start, size, GUIDs, label where given) is kept;
- one that does not match is recreated with wipePartitionEntry, resized with resize
  (when only its size differs), and is an error otherwise;
- shouldExist false deletes it with wipePartitionEntry, and is an error otherwise;
- start 0 (or none for a new partition) is the start of the largest free space, size 0
  (or none) runs to the end of the free space the partition starts in; a partition
  that exists keeps its start and size when they are not given.
Every partition gets an explicit start and size in the sfdisk script, so what is written
is exactly what was planned. Keel differs from Ignition where a config applied twice
would change a disk the first run already made as asked: a partition given by label
only (number 0) on a disk that already has a partition of that label (and no
wipeTable) is that partition, not a second one; and wipeTable leaves a GPT alone that
holds exactly the partitions asked for and no other. Only GPT is written; a disk with
another table needs wipeTable."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hostd.ignition.disks import Disk, Partition

MIB = 1024 * 1024
GPT_ENTRIES_BYTES = 128 * 128  # 128 entries of 128 bytes, as sfdisk and sgdisk write
LINUX_FILESYSTEM = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"  # the default type of both


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class Slot:
    """One partition table entry, in sectors (as sfdisk --json reports it)."""

    number: int
    start: int
    size: int
    type: str = LINUX_FILESYSTEM
    uuid: str = ""  # "": sfdisk makes a random one
    name: str = ""
    attrs: str = ""

    @property
    def end(self) -> int:
        return self.start + self.size - 1


@dataclass(frozen=True)
class Table:
    label: str  # gpt, dos, ...
    id: str
    first: int  # first and last usable sector
    last: int
    sector: int
    slots: tuple[Slot, ...] = ()


@dataclass
class DiskPlan:
    """What to do to one disk: wipe its signatures first (wipeTable), then write
    table (None: leave the table as it is)."""

    node: str
    sector: int
    wipe: bool = False
    table: Table | None = None
    layout: dict[int, Slot] = field(default_factory=dict)  # the partitions once done
    fresh: set[int] = field(default_factory=set)  # numbers made, remade or resized
    given: set[int] = field(default_factory=set)  # numbers of the config's partitions
    notes: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return self.wipe or self.table is not None


def _mib(sectors: int, sector: int) -> str:
    size = sectors * sector
    return f"{size // MIB} MiB" if size % MIB == 0 else f"{sectors} sectors"


def _free(layout: dict[int, Slot], first: int, last: int) -> list[tuple[int, int]]:
    """The free ranges (first sector, last sector) between the partitions."""
    ranges, cursor = [], first
    for slot in sorted(layout.values(), key=lambda s: s.start):
        if slot.start > cursor:
            ranges.append((cursor, slot.start - 1))
        cursor = max(cursor, slot.end + 1)
    if cursor <= last:
        ranges.append((cursor, last))
    return ranges


def _place(
    start: int | None, size: int | None, layout: dict[int, Slot], bounds: tuple[int, int],
    align: int,
) -> tuple[int, int] | None:  # fmt: skip
    """(start, size) for a new partition, as sgdisk places one; None if it does not fit."""
    free = _free(layout, *bounds)
    if not start:
        if not free:
            return None
        block = max(free, key=lambda r: r[1] - r[0])  # the first of the largest
        start = -(-block[0] // align) * align
    block_of = next(((a, b) for a, b in free if a <= start <= b), None)
    if block_of is None:
        return None
    if not size:
        size = block_of[1] - start + 1
    if start + size - 1 > block_of[1]:
        return None
    return start, size


def _mismatch(current: Slot, part: Partition, start: int | None, size: int | None,
              sector: int) -> str | None:  # fmt: skip
    """Why the existing entry does not match the partition asked for (None: it does)."""
    if start is not None and start != current.start:
        return f"it starts at sector {current.start}, not {start}"
    if size is not None and size != current.size:
        return f"it is {_mib(current.size, sector)}, not {_mib(size, sector)}"
    if part.guid and part.guid.lower() != current.uuid.lower():
        return f"its GUID is {current.uuid}, not {part.guid}"
    if part.type_guid and part.type_guid.lower() != current.type.lower():
        return f"its type GUID is {current.type}, not {part.type_guid}"
    if part.label is not None and part.label != current.name:
        return f"its label is {current.name!r}, not {part.label!r}"
    return None


def plan_disk(disk: Disk, current: Table | None, sector: int, sectors: int,
              field: str, node: str) -> DiskPlan:  # fmt: skip
    """What applying disk means for a disk of sectors (of sector bytes) holding current
    (None: no table); PlanError if it cannot be done, naming the partition's field."""
    if disk.wipe_table and disk.partitions and current is not None and current.label == "gpt":
        try:
            kept = _plan(replace(disk, wipe_table=False), current, sector, sectors, field, node)
        except PlanError:
            kept = None
        if kept and not kept.changes and kept.given == {s.number for s in current.slots}:
            kept.notes.insert(0, f"unchanged: the partition table of {disk.device} (not wiped)")
            return kept
    return _plan(disk, current, sector, sectors, field, node)


Wanted = tuple[int, Partition, int, int | None, int | None]  # index, entry, number, start, size
Resolved = tuple[str, Partition, int, int, int]  # field, entry, number, start, size


def _plan(disk: Disk, current: Table | None, sector: int, sectors: int,
          field: str, node: str) -> DiskPlan:  # fmt: skip
    """Ignition's steps for one disk: read what each entry asks for, place each in the
    free space, compare with what is there, and write the table if anything changes."""
    plan = DiskPlan(node=node, sector=sector, wipe=disk.wipe_table)
    align = max(MIB // sector, 1)
    keep = current is not None and not disk.wipe_table
    if keep and current is not None and current.label != "gpt" and disk.partitions:
        raise PlanError(
            f"field '{field}': {disk.device} holds a {current.label or 'unknown'} partition "
            "table; Keel writes GPT only: set wipeTable: true to replace it (its partitions "
            "are lost)"
        )
    if keep and current is not None:
        existing = {slot.number: slot for slot in current.slots}
        bounds = (current.first, current.last)
    else:
        existing = {}
        bounds = (align, sectors - 2 - -(-GPT_ENTRIES_BYTES // sector))
    wanted, sim, used = _wanted(disk, existing, sector)
    resolved = _placed(disk, plan, wanted, sim, used, bounds, align, field)
    layout = _layout(disk, plan, existing, resolved, sector)
    plan.layout = layout
    plan.fresh = {n for n, slot in layout.items() if existing.get(n) != slot}
    deleted = set(existing) - set(layout)
    if plan.fresh or deleted or (disk.wipe_table and disk.partitions):
        plan.table = Table(
            label="gpt",
            id=current.id if keep and current is not None else "",
            first=bounds[0] if keep else 0,
            last=bounds[1] if keep else 0,
            sector=sector,
            slots=tuple(layout[n] for n in sorted(layout)),
        )
    if disk.wipe_table:
        plan.notes.insert(0, f"wiped the partition table of {disk.device}")
    return plan


def _wanted(
    disk: Disk, existing: dict[int, Slot], sector: int
) -> tuple[list[Wanted], dict[int, Slot], set[int]]:
    """Each entry's number, start and size in sectors (None: to be chosen), with what
    Ignition's pretend run leaves: every given partition deleted first, and the numbers
    in use."""
    # Number 0: the partition of that label, else the next free number (in _placed).
    by_label = {slot.name: slot.number for slot in existing.values() if slot.name}
    ordered = sorted(enumerate(disk.partitions), key=lambda item: item[1].number == 0)
    wanted: list[Wanted] = []
    sim = dict(existing)
    used = set(existing)
    for index, part in ordered:
        number = part.number or by_label.get(part.label or "", 0)
        start = part.start_mib * MIB // sector if part.start_mib is not None else None
        size = part.size_mib * MIB // sector if part.size_mib is not None else None
        if number in existing:
            sim.pop(number)
            if start is None and not part.wipe_entry:
                start = existing[number].start
            if size is None and not part.wipe_entry:
                size = existing[number].size
        if number:
            if part.should_exist:
                used.add(number)
            else:
                used.discard(number)
        wanted.append((index, part, number, start, size))
    return wanted, sim, used


def _placed(disk: Disk, plan: DiskPlan, wanted: list[Wanted], sim: dict[int, Slot],
            used: set[int], bounds: tuple[int, int], align: int,
            field: str) -> list[Resolved]:  # fmt: skip
    """Give each entry that should exist a number and a place in the free space."""
    resolved: list[Resolved] = []
    for index, part, number, start, size in wanted:
        where = f"{field}.partitions[{index}]"
        if not part.should_exist:
            resolved.append((where, part, number, 0, 0))
            continue
        if not number:
            number = min(set(range(1, 129)) - used, default=0)
            if not number:
                raise PlanError(f"field '{where}': {disk.device} has no free partition number")
            used.add(number)
        placed = _place(start, size, sim, bounds, align)
        if placed is None:
            raise PlanError(
                f"field '{where}': partition {number} does not fit on {disk.device} (its "
                "start and size must lie in free space)"
            )
        sim[number] = Slot(number, *placed)
        plan.given.add(number)
        resolved.append((where, part, number, *placed))
    return resolved


def _layout(disk: Disk, plan: DiskPlan, existing: dict[int, Slot],
            resolved: list[Resolved], sector: int) -> dict[int, Slot]:  # fmt: skip
    """The table after this config: each entry made, kept, remade, resized or deleted,
    as Ignition's rules allow; a note for each."""
    layout = dict(existing)
    for where, part, number, start, size in resolved:
        current_slot = existing.get(number)
        if not part.should_exist:
            if current_slot is None:
                plan.notes.append(f"unchanged: partition {number} of {disk.device} (absent)")
            elif part.wipe_entry:
                del layout[number]
                plan.notes.append(f"deleted partition {number} of {disk.device}")
            else:
                raise PlanError(
                    f"field '{where}': partition {number} of {disk.device} exists; "
                    "shouldExist false deletes it only with wipePartitionEntry: true"
                )
            continue
        new = Slot(number, start, size, part.type_guid or LINUX_FILESYSTEM, part.guid or "",
                   part.label or "")  # fmt: skip
        what = f"partition {number} of {disk.device} ({_mib(size, sector)}"
        what += f", label {part.label})" if part.label else ")"
        if current_slot is None:
            layout[number] = new
            plan.notes.append(f"made {what}")
            continue
        given_start = None if part.start_mib is None and not part.wipe_entry else start
        given_size = None if part.size_mib is None and not part.wipe_entry else size
        problem = _mismatch(current_slot, part, given_start, given_size, sector)
        if problem is None:
            plan.notes.append(f"unchanged: {what}")
            continue
        if part.wipe_entry:
            layout[number] = new
            plan.notes.append(f"remade {what}: {problem}")
        elif part.resize and _mismatch(current_slot, part, given_start, None, sector) is None:
            layout[number] = replace(current_slot, size=size)
            plan.notes.append(f"resized {what}")
        else:
            raise PlanError(
                f"field '{where}': partition {number} of {disk.device} does not match: "
                f"{problem}; set wipePartitionEntry: true to remake it (its data is lost)"
                + (", or resize: true if only its size differs" if "MiB" in problem else "")
            )
    return layout


def sfdisk_script(table: Table, node: str) -> str:
    """sfdisk's input for table on node: every start and size explicit, in sectors.
    An empty id, first or last lets sfdisk choose (a new table)."""
    lines = ["label: gpt"]
    if table.id:
        lines.append(f"label-id: {table.id}")
    lines.append("unit: sectors")
    if table.first and table.last:
        lines += [f"first-lba: {table.first}", f"last-lba: {table.last}"]
    lines.append("")
    for slot in table.slots:
        fields = [f"start={slot.start}", f"size={slot.size}", f"type={slot.type}"]
        if slot.uuid:
            fields.append(f"uuid={slot.uuid}")
        if slot.name:
            fields.append(f'name="{slot.name}"')
        if slot.attrs:
            fields.append(f'attrs="{slot.attrs}"')
        lines.append(f"{partition_name(node, slot.number)} : {', '.join(fields)}")
    return "\n".join(lines) + "\n"


def partition_name(node: str, number: int) -> str:
    """/dev/vdb, 1 -> /dev/vdb1; /dev/nvme0n1, 1 -> /dev/nvme0n1p1 (the kernel's rule)."""
    return f"{node}{'p' if node[-1:].isdigit() else ''}{number}"
