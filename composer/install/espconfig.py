"""The provisioning config on the target's ESP, as keel/provision.ign: the file a
host's first boot reads when no config comes through QEMU's fw_cfg (hostd/provision.py).

mtools writes into the FAT filesystem at the ESP's offset in the target (`-i
TARGET@@OFFSET`), so neither a loop device nor a mount is needed, for a file or a
disk alike. The file is read back the same way and compared."""

from __future__ import annotations

import tempfile
from pathlib import Path

from composer.core import commands
from composer.core.errors import KeelError
from composer.install.image import WrittenPartition
from hostd.formats.bootentry import ESP_CONFIG

# mtools refuses some valid FAT images (its geometry check) unless told not to check.
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}


def _image(target: Path, esp: WrittenPartition) -> str:
    return f"{target}@@{esp.start}"


def place_config(target: Path, esp: WrittenPartition, ignition: bytes) -> None:
    """Write ignition to ::keel/provision.ign on the ESP and check it reads back."""
    image = _image(target, esp)
    folder = ESP_CONFIG.rsplit("/", 1)[0]
    listing = commands.run(
        ["mdir", "-b", "-i", image, f"::{folder}"], env=MTOOLS_ENV, capture=True, check=False
    )
    if listing.returncode != 0:
        commands.run(["mmd", "-i", image, f"::{folder}"], env=MTOOLS_ENV)
    with tempfile.TemporaryDirectory(prefix="keel-install-") as scratch:
        source = Path(scratch) / "provision.ign"
        source.write_bytes(ignition)
        commands.run(
            ["mcopy", "-D", "o", "-i", image, source, f"::{ESP_CONFIG}"],
            env=MTOOLS_ENV,
            hint="the ESP may be full: the config must fit beside the boot files",
        )
    if read_config(target, esp) != ignition:
        raise KeelError(f"{target}: ::{ESP_CONFIG} on the ESP does not read back as written")


def read_config(target: Path, esp: WrittenPartition) -> bytes:
    result = commands.run(
        ["mtype", "-i", _image(target, esp), f"::{ESP_CONFIG}"], env=MTOOLS_ENV, capture=True
    )
    return result.stdout
