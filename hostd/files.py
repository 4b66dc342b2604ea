"""Replacing a file so that a power cut leaves the old content or the new, never half
of either: write a temporary file next to it, fsync it, rename it over the file, then
fsync the renamed file and the folder. Every file hostd replaces goes through here.

The fsync after the rename is for the ESP: on FAT, Linux's vfat writes the new
directory entry with size 0 and no first cluster, and fills both in only when the
file's inode is written back, up to a minute later. Syncing only the folder (enough
on ext4) once left a 0-byte keel-1.0.0-a.conf after a power cut, and a machine with
no bootable entry. On ext4 the extra fsync finds nothing to write.

Files hostd did not create (a bundle an operator names, a repository copy on removable
media) are read through open_untrusted(), once: whoever can write such a file or its
folder can put other content behind the same path at any moment, so hostd copies what
it read into a private folder and verifies and uses only the copy."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO


class UnsafeFile(Exception):
    """A path hostd will not read or use: a symbolic link, not a regular file, or a
    private folder that is not hostd's own."""


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


def write_all(fd: int, block: bytes) -> None:
    """os.write until all of block is written (a write may take only part of it)."""
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view) :]


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


def open_untrusted(path: Path) -> BinaryIO:
    """Open a file hostd did not create, for reading, never through a symbolic link and
    only if it is a regular file (a FIFO would block hostd, a device never end). Read
    it through this one handle: the path may name other content a moment later."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeFile(f"{path} is a symbolic link; name the file itself") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeFile(f"{path} is not a regular file")
        # O_NONBLOCK was only for the open (a FIFO's open waits for a writer).
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def fresh_private_folder(path: Path) -> Path:
    """path as an empty folder that only hostd's user may enter (mode 0700): where
    hostd keeps the copies it verifies and applies. Whatever an earlier attempt left
    there (a power cut mid-download) is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise UnsafeFile(f"{path} is not a folder of hostd's own; remove it")
    os.chmod(path, 0o700)
    empty_folder(path)
    return path


def empty_folder(path: Path) -> None:
    """Remove everything in path (links themselves, never what they point to)."""
    try:
        children = list(path.iterdir())
    except FileNotFoundError:
        return
    for child in children:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink(missing_ok=True)


def free_bytes(folder: Path) -> int:
    """Free space in folder's file system, without the blocks reserved for root: hostd
    runs as root, but the rest of the system needs those when /var is otherwise full."""
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize
