"""Replacing a file so that a power cut leaves the old content or the new, never half
of either: write a temporary file next to it, fsync it, rename it over the file, then
fsync the renamed file and the folder. Every file hostd replaces goes through here.

The fsync after the rename is for the ESP: on FAT, Linux's vfat writes the new
directory entry with size 0 and no first cluster, and fills both in only when the
file's inode is written back, up to a minute later. Syncing only the folder (enough
on ext4) once left a 0-byte keel-1.0.0-a.conf after a power cut, and a machine with
no bootable entry. On ext4 the extra fsync finds nothing to write."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, data: bytes) -> None:
    with replacing(path) as handle:
        handle.write(data)


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A temporary file to stream path's new content into. Leaving the block normally
    puts it in place durably; an exception removes it and leaves path as it was, so a
    check inside the block (a digest) can still refuse the content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden and not ending in .conf: systemd-boot never reads a half-written entry.
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    rename_durably(temporary, path)


def rename_durably(source: Path, dest: Path) -> None:
    os.replace(source, dest)
    _fsync(dest, os.O_RDONLY)
    fsync_dir(dest.parent)


def fsync_dir(folder: Path) -> None:
    _fsync(folder, os.O_RDONLY | os.O_DIRECTORY)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
