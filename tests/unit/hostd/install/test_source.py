"""Reading the booted slot's filesystem size from its erofs superblock."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from composer.build.verity import append_hash_tree
from hostd.install.errors import InstallError
from hostd.install.source import EROFS_MAGIC, erofs_size, slot_content_size


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


def erofs_with_tree(path: Path, blocks: int) -> str:
    """An erofs superblock in blocks * 4096 bytes, then a real dm-verity tree."""
    data = bytearray(blocks * 4096)
    struct.pack_into("<I", data, 1024, EROFS_MAGIC)
    data[1024 + 12] = 12
    struct.pack_into("<I", data, 1024 + 36, blocks)
    path.write_bytes(bytes(data))
    return append_hash_tree(path, "img", "1.0").kernel_argument()


def test_a_verified_slot_is_copied_with_its_tree(tmp_path: Path) -> None:
    argument = erofs_with_tree(tmp_path / "slot", 300)
    size, words = slot_content_size(str(tmp_path / "slot"), ["ro", argument, "quiet"])
    assert size == (tmp_path / "slot").stat().st_size  # filesystem, superblock and tree
    assert words == (argument,)
    # Without keel.verity= on the booted command line: the filesystem only.
    assert slot_content_size(str(tmp_path / "slot"), ["ro"]) == (300 * 4096, ())


def test_a_verity_argument_for_another_size_refuses(tmp_path: Path) -> None:
    argument = erofs_with_tree(tmp_path / "slot", 300)
    other = argument.replace(":300:", ":299:")
    with pytest.raises(InstallError, match="covers 1224704 bytes"):
        slot_content_size(str(tmp_path / "slot"), [other])
