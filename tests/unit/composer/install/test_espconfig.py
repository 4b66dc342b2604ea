"""The provisioning config goes into the FAT filesystem at the ESP's offset with
mtools: no loop device, no mount."""

from __future__ import annotations

import subprocess
from pathlib import Path

from composer.install.espconfig import place_config, read_config
from composer.install.image import WrittenPartition
from tests.unit.composer.install.conftest import MIB, needs_tools

pytestmark = needs_tools


def fat_at(path: Path, offset: int) -> WrittenPartition:
    """A file with a FAT filesystem (and no keel/ folder) starting at offset."""
    fat = path.with_suffix(".fat")
    with fat.open("wb") as handle:
        handle.truncate(8 * MIB)
    subprocess.run(["mkfs.vfat", str(fat)], capture_output=True, check=True)
    with path.open("wb") as handle:
        handle.seek(offset)
        handle.write(fat.read_bytes())
    return WrittenPartition(1, "esp", "", "", offset, 8 * MIB, None, None)


def test_the_config_lands_in_keel_provision_ign_and_replaces_an_older_one(
    tmp_path: Path,
) -> None:
    disk = tmp_path / "disk.img"
    esp = fat_at(disk, MIB)
    place_config(disk, esp, b'{"ignition": {"version": "3.4.0"}}\n')
    assert read_config(disk, esp) == b'{"ignition": {"version": "3.4.0"}}\n'
    place_config(disk, esp, b'{"ignition": {"version": "3.3.0"}}\n')
    assert read_config(disk, esp) == b'{"ignition": {"version": "3.3.0"}}\n'
    listing = subprocess.run(
        ["mdir", "-b", "-i", f"{disk}@@{MIB}", "::keel"],
        capture_output=True,
        text=True,
        env={"MTOOLS_SKIP_CHECK": "1"},
        check=True,
    )
    assert listing.stdout.split() == ["::/keel/provision.ign"]
    # The bytes before the ESP are not touched.
    assert disk.read_bytes()[:MIB] == bytes(MIB)
