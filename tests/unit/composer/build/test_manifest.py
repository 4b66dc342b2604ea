"""The build's file hashes: remembered within a build, never across a rewrite."""

import os
import time
from pathlib import Path

from composer.build.manifest import sha256_file


def test_a_file_rewritten_with_the_same_size_mtime_and_inode_is_hashed_again(
    tmp_path: Path,
) -> None:
    # What a rebuild of the kernel image does: same path and size, mtime clamped to
    # SOURCE_DATE_EPOCH, and here even the same inode (written in place).
    image = tmp_path / "keel.efi"
    image.write_bytes(b"a" * 4096)
    os.utime(image, (1_700_000_000, 1_700_000_000))
    first = sha256_file(image)
    inode = image.stat().st_ino
    time.sleep(0.02)  # past the filesystem's timestamp granularity
    with image.open("r+b") as handle:
        handle.write(b"b" * 4096)
    os.utime(image, (1_700_000_000, 1_700_000_000))
    assert image.stat().st_ino == inode and image.stat().st_size == 4096
    assert sha256_file(image) != first
    assert sha256_file(image) == sha256_file(image)
