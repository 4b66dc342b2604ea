"""Reading the booted slot's filesystem size from its erofs superblock."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from hostd.install.errors import InstallError
from hostd.install.source import EROFS_MAGIC, erofs_size


def superblock(path: Path, *, magic: int = EROFS_MAGIC, bits: int = 12, blocks: int = 3000) -> str:
    data = bytearray(8192)
    struct.pack_into("<I", data, 1024, magic)
    data[1024 + 12] = bits
    struct.pack_into("<I", data, 1024 + 36, blocks)
    path.write_bytes(bytes(data))
    return str(path)


def test_size_is_blocks_times_block_size(tmp_path: Path) -> None:
    assert erofs_size(superblock(tmp_path / "slot")) == 3000 * 4096


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"magic": 0xEF53}, "does not start with an erofs filesystem"),
        ({"bits": 40}, "not one Keel wrote"),
        ({"blocks": 0}, "not one Keel wrote"),
    ],
)
def test_anything_else_is_refused(tmp_path: Path, fields: dict[str, int], expected: str) -> None:
    with pytest.raises(InstallError, match=expected):
        erofs_size(superblock(tmp_path / "slot", **fields))


def test_a_short_device_is_refused(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"\0" * 100)
    with pytest.raises(InstallError, match="erofs"):
        erofs_size(str(tmp_path / "short"))
