"""Block devices as sysfs shows them (/sys/dev/block/MAJOR:MINOR)."""

from __future__ import annotations

import os
from pathlib import Path

SYS_DEV_BLOCK = Path("/sys/dev/block")


def underlying(major: int, minor: int, sys_dev_block: Path = SYS_DEV_BLOCK) -> tuple[int, int]:
    """The device under a device-mapper device with exactly one (dm-verity's root:
    its slot partition), else the device itself."""
    slaves = sys_dev_block / f"{major}:{minor}" / "slaves"
    try:
        names = os.listdir(slaves)
    except OSError:
        return major, minor
    if len(names) != 1:
        return major, minor
    try:
        under_major, under_minor = (slaves / names[0] / "dev").read_text().strip().split(":")
        return int(under_major), int(under_minor)
    except (OSError, ValueError):
        return major, minor
