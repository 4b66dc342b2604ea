"""Partition planning: pure arithmetic, no I/O, so it is easy to test.

GPT partition types come from the Discoverable Partitions Specification, so systemd
tools (and people) recognise each partition by type as well as by label."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from composer.definition.model import Partitions
from hostd.formats.growth import VAR_TYPE
from hostd.formats.sizes import MIB

# GPT needs 34 sectors at each end; starting at 1 MiB also aligns every partition.
HEAD = MIB
TAIL = MIB

ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"

# Namespace for the stable UUIDs of an image's partitions (uuid5 of name/version/label).
KEEL_NAMESPACE = uuid.UUID("7d3c1f2a-6b1e-4f4e-9a55-6b6565c00001")


@dataclass(frozen=True)
class PlannedPartition:
    number: int
    label: str
    type_guid: str
    uuid: str
    start: int  # bytes from the start of the disk
    size: int  # bytes

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class DiskPlan:
    disk_uuid: str
    size: int
    partitions: tuple[PlannedPartition, ...]

    def by_label(self, label: str) -> PlannedPartition:
        for part in self.partitions:
            if part.label == label:
                return part
        raise KeyError(label)


def stable_uuid(*parts: str) -> str:
    """The same inputs give the same UUID: builds stay reproducible."""
    return str(uuid.uuid5(KEEL_NAMESPACE, "/".join(parts))).upper()


def plan_disk(sizes: Partitions, image_name: str, version: str) -> DiskPlan:
    for field, value in (("esp", sizes.esp), ("root", sizes.root), ("var", sizes.var)):
        if value <= 0 or value % MIB:
            raise ValueError(f"partitions.{field} must be a positive multiple of 1 MiB")
    layout = (
        ("esp", ESP_TYPE, sizes.esp),
        ("root-a", ROOT_X86_64_TYPE, sizes.root),
        ("root-b", ROOT_X86_64_TYPE, sizes.root),
        ("var", VAR_TYPE, sizes.var),
    )
    start = HEAD
    planned = []
    for number, (label, type_guid, size) in enumerate(layout, start=1):
        part_uuid = stable_uuid(image_name, version, label)
        planned.append(PlannedPartition(number, label, type_guid, part_uuid, start, size))
        start += size
    return DiskPlan(stable_uuid(image_name, version, "disk"), start + TAIL, tuple(planned))


def sfdisk_script(plan: DiskPlan) -> str:
    """Input for `sfdisk DISKFILE`: sizes and starts in 512-byte sectors."""
    lines = ["label: gpt", f"label-id: {plan.disk_uuid}", "unit: sectors", ""]
    for part in plan.partitions:
        lines.append(
            f"start={part.start // 512}, size={part.size // 512}, type={part.type_guid}, "
            f'uuid={part.uuid}, name="{part.label}"'
        )
    return "\n".join(lines) + "\n"
