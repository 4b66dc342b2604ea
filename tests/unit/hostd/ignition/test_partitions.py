"""Partition planning (hostd/ignition/partitions.py): Ignition's reuse rules decided on
the table sfdisk reports, to the sector, before any disk is written."""

from __future__ import annotations

import pytest

from hostd.ignition.disks import Disk, Partition
from hostd.ignition.partitions import (
    LINUX_FILESYSTEM,
    PlanError,
    Slot,
    Table,
    plan_disk,
    sfdisk_script,
)

SECTORS = 2 * 1024 * 1024  # a 1 GiB disk of 512-byte sectors
MIB = 2048  # sectors


def gpt(*slots: Slot) -> Table:
    return Table("gpt", "6DABEAC5-989D-E644-98FF-BDCE6E287C32", 2048, SECTORS - 34, 512, slots)


def plan(disk: Disk, current: Table | None = None):  # type: ignore[no-untyped-def]
    return plan_disk(disk, current, 512, SECTORS, "storage.disks[0]", "/dev/vdb")


def test_a_blank_disk_gets_aligned_partitions_of_the_sizes_asked() -> None:
    disk = Disk("/dev/vdb", partitions=(
        Partition(1, "one", size_mib=100), Partition(label="rest"),
    ))  # fmt: skip
    result = plan(disk)
    assert result.layout == {
        1: Slot(1, MIB, 100 * MIB, LINUX_FILESYSTEM, "", "one"),
        # Number 0: the next free number; no size: to the end of the usable space.
        2: Slot(2, 101 * MIB, SECTORS - 33 - 101 * MIB, LINUX_FILESYSTEM, "", "rest"),
    }
    assert result.fresh == {1, 2} and result.changes and not result.wipe
    assert result.table is not None and result.table.id == ""  # a new table
    assert result.notes == [
        "made partition 1 of /dev/vdb (100 MiB, label one)",
        f"made partition 2 of /dev/vdb ({SECTORS - 33 - 101 * MIB} sectors, label rest)",
    ]


def test_the_sfdisk_script_gives_every_start_and_size() -> None:
    disk = Disk("/dev/vdb", partitions=(
        Partition(1, "docker", size_mib=512, type_guid="4D21B016-B534-45C2-A9FB-5C16E091FD2D",
                  guid="5F3A7E4C-1B2D-4C8E-9A6F-0E1D2C3B4A59"),
    ))  # fmt: skip
    result = plan(disk)
    assert result.table is not None
    assert sfdisk_script(result.table, "/dev/vdb") == (
        "label: gpt\nunit: sectors\n\n"
        "/dev/vdb1 : start=2048, size=1048576, type=4D21B016-B534-45C2-A9FB-5C16E091FD2D, "
        'uuid=5F3A7E4C-1B2D-4C8E-9A6F-0E1D2C3B4A59, name="docker"\n'
    )
    kept = gpt(Slot(1, 2048, 2048, name="a", attrs="RequiredPartition"))
    assert sfdisk_script(kept, "/dev/nvme0n1").splitlines()[1:5] == [
        "label-id: 6DABEAC5-989D-E644-98FF-BDCE6E287C32",
        "unit: sectors",
        "first-lba: 2048",
        f"last-lba: {SECTORS - 34}",
    ]
    assert sfdisk_script(kept, "/dev/nvme0n1").endswith(
        "/dev/nvme0n1p1 : start=2048, size=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, "
        'name="a", attrs="RequiredPartition"\n'
    )


def test_a_matching_partition_is_kept_and_nothing_is_written() -> None:
    existing = gpt(Slot(1, MIB, 100 * MIB, name="data", uuid="AB"), Slot(5, 200 * MIB, MIB))
    disk = Disk("/dev/vdb", partitions=(Partition(1, "data", size_mib=100),))
    result = plan(disk, existing)
    assert not result.changes and result.table is None
    assert result.notes == ["unchanged: partition 1 of /dev/vdb (100 MiB, label data)"]
    # Start and size not given: an existing partition keeps its own.
    assert not plan(Disk("/dev/vdb", partitions=(Partition(5),)), existing).changes


def test_a_partition_that_does_not_match_needs_wipe_partition_entry() -> None:
    existing = gpt(Slot(1, MIB, 100 * MIB, name="data"))
    different = Partition(1, "data", size_mib=200)
    with pytest.raises(PlanError) as error:
        plan(Disk("/dev/vdb", partitions=(different,)), existing)
    assert "field 'storage.disks[0].partitions[0]'" in str(error.value)
    assert "it is 100 MiB, not 200 MiB" in str(error.value)
    assert "wipePartitionEntry" in str(error.value) and "resize" in str(error.value)
    remade = plan(Disk("/dev/vdb", partitions=(Partition(1, "new", wipe_entry=True),)), existing)
    assert remade.layout[1].name == "new" and remade.fresh == {1}
    assert remade.table is not None and remade.table.id == gpt().id  # the table is kept
    resized = plan(Disk("/dev/vdb", partitions=(Partition(1, size_mib=300, resize=True),)),
                   existing)  # fmt: skip
    assert resized.layout[1] == Slot(1, MIB, 300 * MIB, name="data")
    assert resized.notes[0].startswith("resized partition 1")


def test_should_exist_false_deletes_only_with_wipe_partition_entry() -> None:
    existing = gpt(Slot(1, MIB, MIB), Slot(2, 2 * MIB, MIB))
    with pytest.raises(PlanError, match="wipePartitionEntry: true"):
        plan(Disk("/dev/vdb", partitions=(Partition(2, should_exist=False),)), existing)
    deleted = plan(
        Disk("/dev/vdb", partitions=(Partition(2, should_exist=False, wipe_entry=True),)), existing
    )
    assert set(deleted.layout) == {1} and deleted.table is not None
    absent = plan(Disk("/dev/vdb", partitions=(Partition(3, should_exist=False),)), existing)
    assert not absent.changes


def test_a_label_alone_finds_the_partition_a_first_run_made() -> None:
    existing = gpt(Slot(1, MIB, 100 * MIB, name="docker"))
    again = plan(Disk("/dev/vdb", partitions=(Partition(label="docker", size_mib=100),)), existing)
    assert not again.changes


def test_wipe_table_leaves_a_table_that_is_already_as_asked() -> None:
    disk = Disk("/dev/vdb", True, (Partition(1, "docker"),))
    first = plan(disk)
    assert first.wipe and first.table is not None
    made = gpt(*first.table.slots)
    again = plan(disk, made)
    assert not again.changes
    assert again.notes[0] == "unchanged: the partition table of /dev/vdb (not wiped)"
    # Another partition on the disk: the table is wiped and written anew.
    extra = plan(disk, gpt(*first.table.slots[:1], Slot(7, SECTORS - 100, 10)))
    assert extra.wipe and extra.table is not None and set(extra.layout) == {1}


def test_another_table_type_needs_wipe_table() -> None:
    dos = Table("dos", "0x1234", 2048, SECTORS - 1, 512, (Slot(1, MIB, MIB),))
    with pytest.raises(PlanError, match=r"holds a dos partition table.*wipeTable"):
        plan(Disk("/dev/vdb", partitions=(Partition(2),)), dos)
    assert plan(Disk("/dev/vdb", True, (Partition(2),)), dos).layout.keys() == {2}


def test_a_partition_that_does_not_fit_is_refused() -> None:
    with pytest.raises(PlanError, match=r"partitions\[0\]'.*does not fit"):
        plan(Disk("/dev/vdb", partitions=(Partition(1, size_mib=2048),)))
    existing = gpt(Slot(1, MIB, 100 * MIB))
    with pytest.raises(PlanError, match="does not fit"):
        plan(Disk("/dev/vdb", partitions=(Partition(2, start_mib=50, size_mib=10),)), existing)


def test_start_zero_is_the_largest_free_space() -> None:
    existing = gpt(Slot(1, MIB, MIB), Slot(2, 10 * MIB, MIB))  # free: 8 MiB, then the rest
    result = plan(Disk("/dev/vdb", partitions=(Partition(3, start_mib=0, size_mib=10),)), existing)
    assert result.layout[3].start == 11 * MIB


def test_four_kib_sectors() -> None:
    disk = Disk("/dev/vdb", partitions=(Partition(1, size_mib=1),))
    result = plan_disk(disk, None, 4096, 262144, "storage.disks[0]", "/dev/vdb")
    assert result.layout[1] == Slot(1, 256, 256)
