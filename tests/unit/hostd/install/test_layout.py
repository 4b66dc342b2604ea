"""The new disk's table (hostd/install/layout.py): the booted disk's partitions where
they are, var small (it grows on the first boot), temporary names, no old UUIDs."""

from __future__ import annotations

import pytest

from hostd.ignition.partitions import Slot, Table
from hostd.install.errors import InstallError
from hostd.install.layout import FIRST_VAR, needed_size, plan, sfdisk_script

MIB = 1024**2
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
VAR_TYPE = "4D21B016-B534-45C2-A9FB-5C16E091FD2D"


def booted_table(var_mib: int = 18_000, sector: int = 512) -> Table:
    """A grown Keel disk: ESP 128 MiB, two 640 MiB slots, var after them."""
    per_mib = MIB // sector

    def slot(number: int, name: str, kind: str, start: int, size: int) -> Slot:
        return Slot(number, start * per_mib, size * per_mib, kind, f"uuid-{number}", name)

    return Table(
        "gpt", "disk-guid", 34, 0, sector,
        (
            slot(1, "esp", ESP_TYPE, 1, 128),
            slot(2, "root-a", ROOT_TYPE, 129, 640),
            slot(3, "root-b", ROOT_TYPE, 769, 640),
            slot(4, "var", VAR_TYPE, 1409, var_mib),
        ),
    )  # fmt: skip


def test_partitions_keep_their_place_and_var_starts_small() -> None:
    planned = plan(booted_table(), disk_size=64 * 1024**3)
    assert [(p.name, p.start // MIB, p.size // MIB) for p in planned] == [
        ("esp", 1, 128),
        ("root-a", 129, 640),
        ("root-b", 769, 640),
        ("var", 1409, FIRST_VAR // MIB),
    ]


def test_var_fits_a_disk_just_big_enough() -> None:
    table = booted_table()
    smallest = needed_size(table)
    planned = plan(table, disk_size=smallest)
    assert planned[-1].end <= smallest - MIB
    with pytest.raises(InstallError, match="too small"):
        plan(table, disk_size=smallest - 2 * MIB)


def test_a_var_smaller_than_first_var_keeps_its_size() -> None:
    assert plan(booted_table(var_mib=512), disk_size=64 * 1024**3)[-1].size == 512 * MIB


def test_script_has_temporary_names_and_no_old_identifiers() -> None:
    script = sfdisk_script(plan(booted_table(), 64 * 1024**3), 512)
    assert script.startswith("label: gpt\n")
    assert "name=keel-new-esp" in script and "name=keel-new-var" in script
    assert "name=esp" not in script
    assert "uuid" not in script and "disk-guid" not in script
    assert f"start={129 * 2048}, size={640 * 2048}, type={ROOT_TYPE}" in script


def test_a_4k_sector_disk_gets_offsets_in_its_own_sectors() -> None:
    script = sfdisk_script(plan(booted_table(), 64 * 1024**3), 4096)
    assert f"start={129 * 256}, size={640 * 256}" in script


def test_a_disk_without_keel_layout_is_refused() -> None:
    table = booted_table()
    without_var = Table("gpt", "x", 34, 0, 512, table.slots[:3])
    with pytest.raises(InstallError, match="missing: var"):
        plan(without_var, 64 * 1024**3)
    dos = Table("dos", "x", 34, 0, 512, table.slots)
    with pytest.raises(InstallError, match="not a Keel disk"):
        plan(dos, 64 * 1024**3)
