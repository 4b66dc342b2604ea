"""The file names in an initrd: cpio archives (newc), one after another, the first
ones uncompressed (early microcode, if any), the last one compressed (zstd, as
initramfs-tools makes it for Keel). Written for the test that checks which drivers
the initrd carries."""

from __future__ import annotations

import subprocess
from pathlib import Path

NEWC = b"070701"
HEADER = 110
ZSTD = b"\x28\xb5\x2f\xfd"


def _pad(offset: int) -> int:
    return (offset + 3) & ~3


def _cpio_names(data: bytes, offset: int, names: list[str]) -> int:
    """The names of the archive at offset; returns where the archive ends."""
    while True:
        header = data[offset : offset + HEADER]
        if header[:6] != NEWC:
            raise ValueError(f"no cpio header at byte {offset}")
        size = int(header[54:62], 16)
        name_size = int(header[94:102], 16)
        name = data[offset + HEADER : offset + HEADER + name_size - 1].decode()
        offset = _pad(_pad(offset + HEADER + name_size) + size)
        if name == "TRAILER!!!":
            return offset
        names.append(name)


def initrd_names(path: Path) -> list[str]:
    data = path.read_bytes()
    names: list[str] = []
    offset = 0
    while offset < len(data):
        if data[offset : offset + 6] == NEWC:
            offset = _cpio_names(data, offset, names)
        elif data[offset : offset + 4] == b"\0\0\0\0":
            offset += 4  # padding between archives
        elif data[offset : offset + 4] == ZSTD:
            inner = subprocess.run(
                ["zstd", "-dc"], input=data[offset:], capture_output=True, check=True
            ).stdout
            _cpio_names(inner, 0, names)
            break
        else:
            raise ValueError(f"{path}: unknown data at byte {offset}")
    return names
